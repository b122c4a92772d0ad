"""Drift scenarios for extraction specialists: a reference set and a stream that changes.

The extraction counterpart of :func:`lifecycle.synthetic.scenarios.build_scenario`. What goes
wrong for an entity extractor after deployment differs from a classifier: a field it was never
taught appears (tracking numbers), a known field changes its form (a new order id scheme,
European dates), or nothing changes (the false-alarm check). :func:`snips_holdout_scenario`
builds the new-field case from real data: the SNIPS intents, with one intent and the slot
types only it has held back until the onset.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lifecycle.config.errors import DataError
from lifecycle.synthetic.streams import StreamScenario, check_counts, derive_seed, shuffle_together
from lifecycle.synthetic.tickets import ALL_LABELS, generate_tickets

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

EXTRACTION_SCENARIOS: tuple[str, ...] = (
    "stationary",
    "new_field",
    "order_id_format",
    "date_format",
)
NEW_FIELD = "tracking_number"
NEW_FIELD_SHARE = 0.4  # new_field: share of after-onset tickets that carry a tracking number
HOLDOUT_SHARE = 0.4  # snips_holdout_scenario: share of after-onset rows from the held-out intent


@dataclass(frozen=True, eq=False)
class ExtractionScenario(StreamScenario):
    """A reference set to train on and a stream of traffic with a change at ``onset``.

    ``reference`` has columns text, entities and template; ``stream`` adds phase
    ("before"/"after") and step (0..n-1, arrival order), and ``stream.phase[onset]`` is the
    first "after" row. ``template`` is the generator's template id, or the SNIPS intent.
    ``new_labels`` are entity labels the reference never has and the stream after onset
    does (empty when only the form of known fields changes). ``eq=False``: frames do not
    compare to a single bool, so scenarios compare by identity.
    """

    columns: ClassVar[tuple[str, ...]] = ("text", "entities", "template")

    new_labels: tuple[str, ...]


def extraction_scenario(
    name: str,
    *,
    n_reference: int = 1000,
    n_before: int = 500,
    n_after: int = 1000,
    seed: int = 0,
) -> ExtractionScenario:
    """The named scenario (one of ``EXTRACTION_SCENARIOS``), each part from its own seed.

    - stationary: after onset tickets look like before; nothing should fire.
    - new_field: after onset ``NEW_FIELD_SHARE`` of tickets carry a ``tracking_number``.
    - order_id_format: after onset order ids follow the "v2" scheme ("2026-US-0042-7781").
    - date_format: after onset dates are European ("14.03.2026", "14 March 2026").

    Format changes touch only the values: the same seed draws the same templates.
    """
    if name not in EXTRACTION_SCENARIOS:
        raise ValueError(
            f"unknown extraction scenario {name!r}; choose one of {', '.join(EXTRACTION_SCENARIOS)}"
        )
    check_counts(n_reference=n_reference, n_before=n_before, n_after=n_after)
    reference = generate_tickets(n_reference, seed=derive_seed(seed, "reference"))
    before = generate_tickets(n_before, seed=derive_seed(seed, "before"))
    after_seed = derive_seed(seed, f"after/{name}")
    new_labels: tuple[str, ...] = ()
    if name == "stationary":
        after = generate_tickets(n_after, seed=after_seed)
        description = "Tickets after onset look like before: same fields, forms and mix."
    elif name == "new_field":
        n_new = round(NEW_FIELD_SHARE * n_after)
        tracked = generate_tickets(
            n_new, seed=derive_seed(after_seed, "new"), labels=ALL_LABELS, require=NEW_FIELD
        )
        usual = generate_tickets(n_after - n_new, seed=derive_seed(after_seed, "usual"))
        after = shuffle_together([tracked, usual], seed=derive_seed(after_seed, "mix"))
        new_labels = (NEW_FIELD,) if n_new else ()
        description = (
            f"After onset {NEW_FIELD_SHARE:.0%} of tickets carry a {NEW_FIELD}, "
            "a field the reference has never had."
        )
    elif name == "order_id_format":
        after = generate_tickets(n_after, seed=after_seed, formats={"order_id": "v2"})
        description = "After onset order ids follow a new scheme, 2026-US-0042-7781 for ORD-123456."
    else:  # date_format
        after = generate_tickets(n_after, seed=after_seed, formats={"date": "european"})
        description = "After onset dates are written European style (14.03.2026, 14 March 2026)."
    return ExtractionScenario.build(
        name, description, reference, before, after, new_labels=new_labels
    )


def snips_holdout_scenario(
    data_dir: str | Path,
    *,
    held_out_intent: str = "GetWeather",
    n_before: int = 1000,
    n_after: int = 1000,
    seed: int = 0,
) -> ExtractionScenario:
    """A new-field scenario from SNIPS: one intent, and the slot types only it has, come late.

    ``data_dir`` holds SNIPS as ``train.jsonl`` and ``test.jsonl`` (text, intent, entities).
    The reference is the train rows of the other intents, stripped of any entity whose label
    occurs only in ``held_out_intent``'s rows (those are ``new_labels``). The stream draws the
    other intents' test rows, then train rows kept out of the reference; after onset
    ``HOLDOUT_SHARE`` of rows come from the held-out intent (train and test). Rows are drawn
    without replacement: asking for more than the data holds is a DataError.
    """
    import numpy as np
    import pandas as pd

    check_counts(n_before=n_before, n_after=n_after)
    folder = Path(data_dir)
    train, test = (_read_jsonl(folder / f"{part}.jsonl") for part in ("train", "test"))
    intents = sorted({*train["intent"], *test["intent"]})
    if held_out_intent not in intents:
        raise ValueError(f"unknown intent {held_out_intent!r}; SNIPS has {intents}")
    labels_of = _labels_by_intent(train, test)
    others = set().union(*(labels for i, labels in labels_of.items() if i != held_out_intent))
    new_labels = tuple(sorted(labels_of[held_out_intent] - others))

    rng = np.random.default_rng(derive_seed(seed, "snips"))
    is_held = train["intent"] == held_out_intent
    kept_train = train[~is_held].iloc[rng.permutation(int((~is_held).sum()))]
    kept_test = test[test["intent"] != held_out_intent]
    n_held = round(HOLDOUT_SHARE * n_after)
    n_kept = n_before + n_after - n_held
    n_from_train = max(0, n_kept - len(kept_test))
    if n_from_train > len(kept_train) // 2:
        raise DataError(
            f"{n_kept} stream rows of the other intents would leave under half of their "
            f"{len(kept_train)} train rows for the reference; lower n_before or n_after."
        )
    pool = pd.concat([kept_test, kept_train.iloc[:n_from_train]], ignore_index=True)
    pool = pool.iloc[rng.permutation(len(pool))]
    held = pd.concat([train[is_held], test[test["intent"] == held_out_intent]], ignore_index=True)
    if n_held > len(held):
        raise DataError(
            f"{n_held} held-out rows asked for, {held_out_intent} has {len(held)}; lower n_after."
        )
    reference = kept_train.iloc[n_from_train:].sort_index()
    reference = reference.assign(
        entities=[[e for e in ents if e["label"] not in new_labels] for ents in reference.entities]
    )
    before = pool.iloc[:n_before]
    after = shuffle_together(
        [pool.iloc[n_before:n_kept], held.iloc[rng.permutation(len(held))[:n_held]]],
        seed=derive_seed(seed, "snips/after"),
    )
    description = (
        f"Intent {held_out_intent} and its slot types {list(new_labels)} are absent from the "
        f"reference; after onset it makes up {HOLDOUT_SHARE:.0%} of traffic."
    )
    rename = {"intent": "template"}
    return ExtractionScenario.build(
        f"snips_holdout/{held_out_intent}",
        description,
        reference.rename(columns=rename),
        before.rename(columns=rename),
        after.rename(columns=rename),
        new_labels=new_labels if n_held else (),
    )


def _read_jsonl(path: Path) -> pd.DataFrame:
    """A SNIPS file as a frame of text, entities and intent, entities sorted by start."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path} is missing; data_dir must hold SNIPS train.jsonl and test.jsonl.")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                entities = sorted(row["entities"], key=lambda e: (e["start"], e["end"]))
                rows.append({"text": row["text"], "entities": entities, "intent": row["intent"]})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{path}:{number} is not a SNIPS row with text, intent, entities: {exc}"
                ) from exc
    return pd.DataFrame(rows, columns=["text", "entities", "intent"])


def _labels_by_intent(*frames: pd.DataFrame) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for frame in frames:
        for intent, entities in zip(frame["intent"], frame["entities"], strict=True):
            found.setdefault(intent, set()).update(e["label"] for e in entities)
    return found
