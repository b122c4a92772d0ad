"""Deterministic customer-support traffic with drift scenarios, for demos, tests and benchmarks.

A specialist's life is judged on what happens after deployment: traffic that stays the same
(no retraining should happen), a new intent appears, the wording changes (a new channel,
slang, new product names), or only the mix of intents changes. This module generates such
streams from templates (:mod:`lifecycle.synthetic.templates`) with slot fillers, greetings,
long rambling context, lowercase/unpunctuated variants and typos, all driven by seeds, so the
same seed gives the same rows on every machine. :func:`holdout_scenario` builds the
new-intent case from a real labelled data set (e.g. Banking77) instead.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from lifecycle.config.errors import DataError
from lifecycle.synthetic.streams import StreamScenario, check_counts, derive_seed, shuffle_together
from lifecycle.synthetic.templates import BASE, SHIFTED, Vocabulary

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

INTENTS: tuple[str, ...] = (
    "card_lost",
    "refund_request",
    "password_reset",
    "delivery_late",
    "cancel_subscription",
    "billing_error",
    "change_address",
    "account_locked",
    "upgrade_plan",
    "app_crash",
    "invoice_request",
    "payment_declined",
)
NEW_INTENTS: tuple[str, ...] = ("crypto_withdrawal", "fraud_report")
SCENARIOS: tuple[str, ...] = ("stationary", "new_intent", "vocabulary_shift", "prior_shift")

NEW_INTENT_SHARE = 0.25  # new_intent: share of after-onset traffic with the new intent
SHIFTED_SHARE = 0.7  # vocabulary_shift: share of after-onset traffic in the shifted wording
DOMINANT_INTENTS = 3  # prior_shift: this many intents ...
DOMINANT_SHARE = 0.8  # ... take this share of after-onset traffic

_VOCABULARIES: dict[str, Vocabulary] = {"base": BASE, "shifted": SHIFTED}
_SLOT = re.compile(r"\{(\w+)\}")
_PUNCTUATION = re.compile(r"(?<!\d)[.,](?!\d)|[!?;:'\"]")
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


@dataclass(frozen=True, eq=False)
class Scenario(StreamScenario):
    """A reference set to train on and a stream of traffic with a change at ``onset``.

    ``stream`` has columns text, label, phase ("before"/"after") and step (0..n-1, arrival
    order); ``stream.step[onset]`` is the first "after" row. ``labels_before`` and
    ``labels_after`` are the label sets traffic is drawn from on each side of the onset
    (sorted), not merely the labels a short sample happened to hit; new labels are
    ``set(labels_after) - set(labels_before)``. ``eq=False``: frames do not compare to a
    single bool, so scenarios compare by identity.
    """

    columns: ClassVar[tuple[str, ...]] = ("text", "label")

    labels_before: tuple[str, ...]
    labels_after: tuple[str, ...]


def generate_tickets(
    n: int,
    *,
    seed: int = 0,
    intents: Sequence[str] | None = None,
    vocabulary: Literal["base", "shifted"] = "base",
    priors: Mapping[str, float] | None = None,
    typo_rate: float = 0.03,
) -> pd.DataFrame:
    """``n`` synthetic support tickets as a frame with columns text and label.

    Intents default to ``INTENTS`` (or the keys of ``priors``). Counts per intent are exact:
    balanced, or proportional to the normalised ``priors`` (largest remainder), then shuffled.
    ``typo_rate`` is the chance that a word of four letters or more gets one typo (a swap,
    drop, doubled or neighbouring key); typos use their own random stream, so changing the
    rate changes only the typos, not the tickets.
    """
    import pandas as pd

    from lifecycle.training.data import _largest_remainder

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= typo_rate <= 1.0:
        raise ValueError(f"typo_rate must be within [0, 1], got {typo_rate}")
    vocab = _VOCABULARIES.get(vocabulary)
    if vocab is None:
        raise ValueError(f"vocabulary must be one of {sorted(_VOCABULARIES)}, got {vocabulary!r}")
    if intents is None:
        intents = tuple(priors) if priors else INTENTS
    chosen = _check_intents(intents)
    counts = _largest_remainder(n, _weights(chosen, priors))

    rng = random.Random(seed)
    typo_rng = random.Random(derive_seed(seed, "typos"))
    labels = [intent for intent, count in zip(chosen, counts, strict=True) for _ in range(count)]
    rng.shuffle(labels)
    texts = [_add_typos(_compose(label, vocab, rng), typo_rate, typo_rng) for label in labels]
    return pd.DataFrame({"text": texts, "label": labels}, columns=["text", "label"], dtype=str)


def build_scenario(
    name: str,
    *,
    n_reference: int = 2000,
    n_before: int = 1000,
    n_after: int = 2000,
    seed: int = 0,
) -> Scenario:
    """The named scenario (one of ``SCENARIOS``) with reference and stream from distinct seeds.

    - stationary: before and after alike; nothing should fire.
    - new_intent: after onset, ``NEW_INTENT_SHARE`` of traffic is ``NEW_INTENTS[0]``.
    - vocabulary_shift: after onset, ``SHIFTED_SHARE`` of traffic uses the shifted wording.
    - prior_shift: after onset, ``DOMINANT_INTENTS`` intents (chosen by seed) take
      ``DOMINANT_SHARE`` of traffic in the base wording; a good model's quality holds, so
      this one must not lead to retraining.
    """
    if name not in SCENARIOS:
        raise DataError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}.")
    check_counts(n_reference=n_reference, n_before=n_before, n_after=n_after)
    reference = generate_tickets(n_reference, seed=derive_seed(seed, "reference"))
    before = generate_tickets(n_before, seed=derive_seed(seed, "before"))
    after_seed = derive_seed(seed, f"after/{name}")
    labels_after = INTENTS

    if name == "stationary":
        after = generate_tickets(n_after, seed=after_seed)
        description = "Traffic after onset looks like before: same intents, wording and mix."
    elif name == "new_intent":
        new = NEW_INTENTS[0]
        priors = {intent: (1.0 - NEW_INTENT_SHARE) / len(INTENTS) for intent in INTENTS}
        priors[new] = NEW_INTENT_SHARE
        labels_after = (*INTENTS, new)
        after = generate_tickets(n_after, seed=after_seed, intents=labels_after, priors=priors)
        description = (
            f"After onset {NEW_INTENT_SHARE:.0%} of traffic asks about {new!r}, "
            "an intent the reference has never seen."
        )
    elif name == "vocabulary_shift":
        n_shifted = round(SHIFTED_SHARE * n_after)
        shifted = generate_tickets(n_shifted, seed=after_seed, vocabulary="shifted")
        usual = generate_tickets(n_after - n_shifted, seed=derive_seed(after_seed, "base"))
        after = shuffle_together([shifted, usual], seed=derive_seed(after_seed, "mix"))
        description = (
            f"After onset {SHIFTED_SHARE:.0%} of traffic comes from a new channel with other "
            "words (slang, new product names) for the same intents."
        )
    else:  # prior_shift
        dominant = random.Random(derive_seed(seed, "dominant")).sample(INTENTS, DOMINANT_INTENTS)
        rest = (1.0 - DOMINANT_SHARE) / (len(INTENTS) - DOMINANT_INTENTS)
        priors = {i: DOMINANT_SHARE / DOMINANT_INTENTS if i in dominant else rest for i in INTENTS}
        after = generate_tickets(n_after, seed=after_seed, priors=priors)
        description = (
            f"After onset {', '.join(sorted(dominant))} take {DOMINANT_SHARE:.0%} of traffic; "
            "the wording stays the same, so a good model's quality holds."
        )
    return Scenario.build(
        name, description, reference, before, after, **_labels(INTENTS, labels_after)
    )


def holdout_scenario(
    df: pd.DataFrame,
    *,
    name: str = "holdout",
    holdout: Sequence[str] | None = None,
    n_holdout: int = 5,
    n_before: int = 1000,
    n_after: int = 2000,
    release_share: float = 0.3,
    seed: int = 0,
    test: pd.DataFrame | None = None,
) -> Scenario:
    """A new-intent scenario from a real labelled table: some intents are released late.

    The reference holds rows of the kept intents only. The stream before onset draws from
    kept intents; after onset ``release_share`` of it comes from the held-out ones. Stream
    rows come from ``test`` when given, else from rows of ``df`` kept out of the reference
    (a stratified share of the kept intents, and every held-out row). When a pool is smaller
    than asked for, rows are reused, with a warning.
    """
    import numpy as np

    from lifecycle.training.data import stratified_split

    if not 0.0 <= release_share <= 1.0:
        raise ValueError(f"release_share must be within [0, 1], got {release_share}")
    frame = _text_label(df, "df")
    labels = sorted(frame["label"].unique())
    if holdout is None:
        if n_holdout < 1:
            raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
        if n_holdout > len(labels) - 2:
            raise DataError(
                f"cannot hold out {n_holdout} of {len(labels)} intents: at least 2 must remain "
                "for the reference. Lower n_holdout."
            )
        held = sorted(random.Random(derive_seed(seed, "holdout")).sample(labels, n_holdout))
    else:
        held = sorted(set(holdout))
        unknown = [h for h in held if h not in set(labels)]
        if unknown:
            raise DataError(f"holdout names unknown labels {unknown}; the table has {labels}.")
        if not held:
            raise DataError("holdout is empty; name at least one label to release late.")
    kept = [label for label in labels if label not in set(held)]
    if len(kept) < 2:
        raise DataError(
            f"holding out {held} leaves {len(kept)} intent(s); the reference needs at least 2."
        )

    n_release = round(release_share * n_after)
    n_kept = n_before + n_after - n_release
    if test is None:
        kept_rows = frame[~frame["label"].isin(held)]
        if n_kept == 0:
            reference, kept_pool = kept_rows, kept_rows.iloc[0:0]
        else:
            fraction = min(0.5, n_kept / len(kept_rows))
            reference, kept_pool = stratified_split(kept_rows, fraction=fraction, seed=seed)
        held_pool = frame[frame["label"].isin(held)]
    else:
        pool = _text_label(test, "test")
        strange = sorted(set(pool["label"]) - set(labels))
        if strange:
            logger.warning("test has labels absent from df, dropped: %s", strange)
        reference = frame[frame["label"].isin(kept)]
        kept_pool = pool[pool["label"].isin(kept)]
        held_pool = pool[pool["label"].isin(held)]

    rng = np.random.default_rng(derive_seed(seed, "stream"))
    before, kept_left = _draw(kept_pool, n_before, rng, what="kept intents")
    after_kept, _ = _draw(kept_left, n_after - n_release, rng, what="kept intents", reuse=kept_pool)
    after_held, _ = _draw(held_pool, n_release, rng, what="held-out intents")
    after = shuffle_together([after_kept, after_held], seed=derive_seed(seed, "after"))
    description = (
        f"Intents {held} are absent from the reference; after onset they make up "
        f"{release_share:.0%} of traffic."
    )
    released = held if n_release > 0 else []
    label_sets = _labels(kept, [*kept, *released])
    return Scenario.build(name, description, reference, before, after, **label_sets)


def _check_intents(intents: Sequence[str]) -> tuple[str, ...]:
    if isinstance(intents, str):
        raise ValueError("intents must be a sequence of intent names, not one string")
    chosen = tuple(dict.fromkeys(intents))
    if not chosen:
        raise ValueError("intents is empty; give at least one intent")
    known = (*INTENTS, *NEW_INTENTS)
    unknown = [i for i in chosen if i not in known]
    if unknown:
        raise DataError(f"unknown intent(s) {unknown}; known intents are {list(known)}.")
    return chosen


def _weights(intents: tuple[str, ...], priors: Mapping[str, float] | None) -> list[float]:
    if priors is None:
        return [1.0] * len(intents)
    stray = [k for k in priors if k not in intents]
    if stray:
        raise DataError(f"priors name intent(s) {stray} that are not among {list(intents)}.")
    weights = [float(priors.get(i, 0.0)) for i in intents]
    if any(not w >= 0.0 for w in weights) or sum(weights) <= 0.0:
        raise ValueError(f"priors must be non-negative with a positive sum, got {dict(priors)}")
    return weights


def _compose(intent: str, vocab: Vocabulary, rng: random.Random) -> str:
    """One ticket: optional greeting, context, the request, details, sign-off; then style."""
    parts: list[str] = []
    if rng.random() < 0.3:
        parts.append(rng.choice(vocab.greetings))
    shape = rng.random()
    n_context = n_details = 0
    if shape < 0.15:  # long and rambling
        n_context, n_details = rng.randint(1, 3), rng.randint(1, 2)
    elif shape < 0.3:
        n_context = 1
    elif shape < 0.45:
        n_details = 1
    parts.extend(rng.sample(vocab.context, n_context))
    parts.append(rng.choice(vocab.templates[intent]))
    details = vocab.details[intent]
    parts.extend(rng.sample(details, min(n_details, len(details))))
    if rng.random() < 0.25:
        parts.append(rng.choice(vocab.signoffs))
    if vocab is BASE:  # full sentences: end each part before the next one starts
        parts = [
            p if p[-1] in ".,!?:" or i == len(parts) - 1 else p + "." for i, p in enumerate(parts)
        ]
    text = _fill_slots(" ".join(parts), vocab, rng)
    if rng.random() < vocab.lowercase_rate:
        text = text.lower()
    if rng.random() < vocab.unpunctuated_rate:
        text = " ".join(_PUNCTUATION.sub("", text).split())
    return text


def _fill_slots(text: str, vocab: Vocabulary, rng: random.Random) -> str:
    """Replace each ``{slot}``; a slot named twice gets one value, ``{amount2}`` another."""
    values: dict[str, str] = {}

    def value(match: re.Match[str]) -> str:
        slot = match.group(1)
        if slot not in values:
            kind = slot.rstrip("0123456789")
            make = vocab.generated.get(kind)
            values[slot] = make(rng) if make is not None else rng.choice(vocab.slots[kind])
        return values[slot]

    return _SLOT.sub(value, text)


def _add_typos(text: str, rate: float, rng: random.Random) -> str:
    if rate <= 0.0:
        return text
    words = text.split(" ")
    for i, word in enumerate(words):
        if rng.random() < rate and sum(c.isalpha() for c in word) >= 4:
            words[i] = _typo(word, rng)
    return " ".join(words)


def _typo(word: str, rng: random.Random) -> str:
    """One keyboard slip inside the word: swap, drop, double or hit a neighbouring key."""
    letters = [j for j, c in enumerate(word) if c.isalpha()]
    j = rng.choice(letters[:-1])
    kind = rng.randrange(4)
    if kind == 0 and word[j + 1].isalpha():
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if kind == 1:
        return word[:j] + word[j + 1 :]
    if kind == 2:
        return word[:j] + word[j] + word[j:]
    for row in _KEYBOARD_ROWS:
        k = row.find(word[j].lower())
        if k >= 0:
            near = row[k - 1] if k > 0 and (k == len(row) - 1 or rng.random() < 0.5) else row[k + 1]
            return word[:j] + near + word[j + 1 :]
    return word[:j] + word[j + 1 :]


def _draw(
    pool: pd.DataFrame,
    k: int,
    rng: np.random.Generator,
    *,
    what: str,
    reuse: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``k`` random rows of ``pool`` and the rows left; reuses rows when the pool is short."""
    import pandas as pd

    if k == 0:
        return pool.iloc[0:0], pool
    order = rng.permutation(len(pool))
    if k <= len(pool):
        return pool.iloc[order[:k]], pool.iloc[order[k:]]
    source = pool if len(pool) else reuse
    if source is None or len(source) == 0:
        raise DataError(f"no rows of {what} to draw the stream from; check the labels of the data.")
    logger.warning("only %d rows of %s for %d stream rows; reusing rows", len(pool), what, k)
    extra = source.iloc[rng.integers(0, len(source), size=k - len(pool))]
    return pd.concat([pool.iloc[order], extra]), pool.iloc[0:0]


def _labels(before: Sequence[str], after: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A Scenario's own fields: the label sets traffic is drawn from before/after onset."""
    return {"labels_before": tuple(sorted(before)), "labels_after": tuple(sorted(after))}


def _text_label(df: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing}; found {[str(c) for c in df.columns]}. "
            "Load it with load_table(path, label_column=...)."
        )
    return df[["text", "label"]].astype(str)
