"""The synthetic ticket generator and the drift scenarios built from it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from lifecycle.config.errors import DataError
from lifecycle.synthetic.scenarios import (
    INTENTS,
    NEW_INTENTS,
    SCENARIOS,
    Scenario,
    build_scenario,
    generate_tickets,
    holdout_scenario,
)
from lifecycle.synthetic.templates import BASE, SHIFTED
from lifecycle.training.data import load_table

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_reference": 1200, "n_before": 600, "n_after": 1200}


def _words(texts: pd.Series) -> Counter[str]:
    return Counter(w for text in texts for w in re.findall(r"[a-z]+", text.lower()))


def _after(scenario: Scenario) -> pd.DataFrame:
    return scenario.stream[scenario.stream["phase"] == "after"]


def _before(scenario: Scenario) -> pd.DataFrame:
    return scenario.stream[scenario.stream["phase"] == "before"]


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Scenario]:
    return {name: build_scenario(name, seed=3, **SMALL) for name in SCENARIOS}


@pytest.fixture(scope="module")
def banking77() -> Path:
    folder = REPO.parent / "shared" / "data" / "banking77"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"Banking77 is absent from {folder}")
    return folder


def test_intent_sets() -> None:
    assert len(INTENTS) >= 12
    assert NEW_INTENTS and set(NEW_INTENTS).isdisjoint(INTENTS)
    for intent in (*INTENTS, *NEW_INTENTS):
        assert len(BASE.templates[intent]) >= 10
        assert len(SHIFTED.templates[intent]) >= 10


def test_generator_is_deterministic() -> None:
    first = generate_tickets(300, seed=5)
    assert first.equals(generate_tickets(300, seed=5))
    other = generate_tickets(300, seed=6)
    assert (first["text"] != other["text"]).mean() > 0.5
    assert list(first.columns) == ["text", "label"]


def test_generator_is_balanced_varied_and_noisy() -> None:
    df = generate_tickets(1200, seed=0)
    assert df["label"].value_counts().to_dict() == dict.fromkeys(INTENTS, 100)
    lengths = df["text"].str.split().str.len()
    assert lengths.min() < 6
    assert lengths.max() > 30
    assert df["text"].nunique() > 0.7 * len(df)
    assert (df["text"] == df["text"].str.lower()).mean() > 0.1  # lowercase tickets
    assert df["text"].str.contains(r"^(?:Hi|Hello|Hey|Dear|Good)\b").any()  # greetings


def test_typos_change_words_only() -> None:
    clean = generate_tickets(600, seed=1, typo_rate=0.0)
    noisy = generate_tickets(600, seed=1, typo_rate=0.1)
    assert clean["label"].equals(noisy["label"])
    changed = clean["text"] != noisy["text"]
    assert 0.2 < changed.mean() < 0.95
    for a, b in zip(clean["text"][changed], noisy["text"][changed], strict=True):
        assert len(a.split(" ")) == len(b.split(" "))  # same words, a few letters off
        assert abs(len(a) - len(b)) <= len(a.split(" "))
    typo_words = _words(noisy["text"]).keys() - _words(clean["text"]).keys()
    assert len(typo_words) > 20


def test_priors_and_new_intents() -> None:
    df = generate_tickets(
        1000,
        seed=2,
        intents=("card_lost", "fraud_report"),
        priors={"card_lost": 3, "fraud_report": 1},
    )
    assert df["label"].value_counts().to_dict() == {"card_lost": 750, "fraud_report": 250}
    shifted = generate_tickets(50, seed=2, vocabulary="shifted", intents=NEW_INTENTS)
    assert set(shifted["label"]) == set(NEW_INTENTS)
    assert generate_tickets(0).empty


def test_generator_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown intent"):
        generate_tickets(10, intents=["card_lost", "teleport"])
    with pytest.raises(DataError, match="priors"):
        generate_tickets(10, intents=["card_lost"], priors={"refund_request": 1.0})
    with pytest.raises(ValueError, match="n must be"):
        generate_tickets(-1)
    with pytest.raises(ValueError, match="priors"):
        generate_tickets(10, priors={"card_lost": 0.0})


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_shape(scenarios: dict[str, Scenario], name: str) -> None:
    s = scenarios[name]
    assert s.name == name and s.description
    assert list(s.stream.columns) == ["text", "label", "phase", "step"]
    assert list(s.reference.columns) == ["text", "label"]
    assert len(s.reference) == SMALL["n_reference"]
    assert len(s.stream) == SMALL["n_before"] + SMALL["n_after"]
    assert s.onset == SMALL["n_before"]
    assert s.stream["step"].tolist() == list(range(len(s.stream)))
    assert (s.stream["phase"].iloc[: s.onset] == "before").all()
    assert (s.stream["phase"].iloc[s.onset :] == "after").all()
    assert set(s.labels_before) == set(INTENTS) == set(s.reference["label"])
    # Reference and stream come from different seeds: only chance duplicates of short texts.
    leaked = s.stream["text"].isin(set(s.reference["text"]))
    assert leaked.mean() < 0.2
    assert s.stream["text"][leaked].str.split().str.len().median() <= 12


def test_scenarios_are_deterministic(scenarios: dict[str, Scenario]) -> None:
    again = build_scenario("vocabulary_shift", seed=3, **SMALL)
    assert again.stream.equals(scenarios["vocabulary_shift"].stream)
    assert again.reference.equals(scenarios["vocabulary_shift"].reference)
    other = build_scenario("vocabulary_shift", seed=4, **SMALL)
    assert not other.stream.equals(again.stream)


def test_unknown_scenario() -> None:
    with pytest.raises(DataError, match="unknown scenario"):
        build_scenario("apocalypse")


def test_new_intent(scenarios: dict[str, Scenario]) -> None:
    s = scenarios["new_intent"]
    new = NEW_INTENTS[0]
    assert new not in set(_before(s)["label"]) and new not in set(s.reference["label"])
    assert new not in s.labels_before and new in s.labels_after
    share = (_after(s)["label"] == new).mean()
    assert share == pytest.approx(0.25, abs=0.01)


def _unseen_share(s: Scenario) -> float:
    """Share of the after-phase word types (seen 3+ times, so not typos) unseen in training."""
    known = _words(s.reference["text"]).keys()
    frequent = {w for w, n in _words(_after(s)["text"]).items() if n >= 3}
    return len(frequent - known) / len(frequent)


def test_vocabulary_shift_brings_new_words(scenarios: dict[str, Scenario]) -> None:
    stationary = _unseen_share(scenarios["stationary"])
    shifted = _unseen_share(scenarios["vocabulary_shift"])
    assert stationary < 0.05
    assert shifted > 0.25
    assert shifted > 5 * stationary
    assert scenarios["vocabulary_shift"].labels_after == scenarios["vocabulary_shift"].labels_before


def _total_variation(a: pd.Series, b: pd.Series) -> float:
    p, q = a.value_counts(normalize=True), b.value_counts(normalize=True)
    return 0.5 * float(p.sub(q, fill_value=0.0).abs().sum())


def test_prior_shift_changes_mix_not_style(scenarios: dict[str, Scenario]) -> None:
    s = scenarios["prior_shift"]
    assert _total_variation(_before(s)["label"], _after(s)["label"]) > 0.3
    assert _total_variation(_before(s)["label"], s.reference["label"]) < 0.05
    assert _unseen_share(s) < 0.05
    stationary = scenarios["stationary"]
    assert _total_variation(_before(stationary)["label"], _after(stationary)["label"]) < 0.05


def test_a_base_trained_classifier_degrades_only_under_vocabulary_shift(
    scenarios: dict[str, Scenario],
) -> None:
    """The point of the scenarios: words shift hurts a model, a priors shift does not."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.naive_bayes import ComplementNB
    from sklearn.pipeline import make_pipeline

    accuracy: dict[str, tuple[float, float]] = {}
    for name in ("vocabulary_shift", "prior_shift"):
        s = scenarios[name]
        model = make_pipeline(TfidfVectorizer(sublinear_tf=True), ComplementNB())
        model.fit(s.reference["text"], s.reference["label"])
        before, after = _before(s), _after(s)
        accuracy[name] = (
            float((model.predict(before["text"]) == before["label"]).mean()),
            float((model.predict(after["text"]) == after["label"]).mean()),
        )
    assert accuracy["vocabulary_shift"][0] > 0.9
    assert accuracy["vocabulary_shift"][1] < accuracy["vocabulary_shift"][0] - 0.2
    assert accuracy["prior_shift"][1] > accuracy["prior_shift"][0] - 0.05


def test_holdout_scenario_on_banking77(banking77: Path) -> None:
    df = load_table(banking77 / "train.csv", label_column="category")
    s = holdout_scenario(df, n_holdout=5, n_before=500, n_after=1000, seed=1)
    held = set(s.labels_after) - set(s.labels_before)
    assert len(held) == 5
    assert held.isdisjoint(s.reference["label"])
    assert set(s.labels_before) == set(s.reference["label"])
    assert s.onset == 500 and len(s.stream) == 1500
    assert _after(s)["label"].isin(held).mean() == pytest.approx(0.3, abs=0.01)
    assert not _before(s)["label"].isin(held).any()
    assert not s.stream["text"].isin(set(s.reference["text"])).any()  # no rows reused
    again = holdout_scenario(df, n_holdout=5, n_before=500, n_after=1000, seed=1)
    assert again.stream.equals(s.stream)


def test_holdout_scenario_with_test_set(banking77: Path) -> None:
    df = load_table(banking77 / "train.csv", label_column="category")
    test = load_table(banking77 / "test.csv", label_column="category")
    s = holdout_scenario(
        df, holdout=["card_arrival", "lost_or_stolen_card"], test=test, n_before=300, n_after=300
    )
    assert set(s.labels_after) - set(s.labels_before) == {"card_arrival", "lost_or_stolen_card"}
    assert set(_after(s)["label"]) - set(s.labels_before) == {"card_arrival", "lost_or_stolen_card"}
    assert set(_before(s)["label"]) <= set(s.labels_before)
    assert set(s.stream["text"]) <= set(test["text"])
    assert len(s.reference) == (~df["label"].isin(["card_arrival", "lost_or_stolen_card"])).sum()


def test_holdout_scenario_errors() -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(9)], "label": ["a", "b", "c"] * 3})
    with pytest.raises(DataError, match="unknown labels"):
        holdout_scenario(df, holdout=["zzz"])
    with pytest.raises(DataError, match="at least 2"):
        holdout_scenario(df, holdout=["a", "b"])
    with pytest.raises(DataError, match="at least 2"):
        holdout_scenario(df, n_holdout=2)
    with pytest.raises(DataError, match="lacks column"):
        holdout_scenario(df.rename(columns={"label": "category"}))
