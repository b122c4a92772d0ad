"""Intent discovery on synthetic embeddings: clusters, terms, examples, edge cases, rendering.

Well-separated blobs on the unit sphere stand in for intents (random directions in 384-d are
nearly orthogonal); no model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lifecycle.labels.discovery as discovery
from lifecycle.labels.discovery import (
    Cluster,
    Discovery,
    discover,
    purity_coverage,
)
from lifecycle.labels.discovery_views import discovery_map, discovery_table

DIMS = 384
#: Each blob's distinctive words, plus words every request shares.
WORDS = {
    "crypto": ["crypto", "withdrawal", "bitcoin"],
    "pension": ["pension", "retirement", "annuity"],
    "mortgage": ["mortgage", "house", "loan"],
}
SHARED = "please help with my account"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _blobs(
    sizes: dict[str, int], *, noise: int = 0, seed: int = 0
) -> tuple[list[str | None], np.ndarray, list[str], dict[str, np.ndarray]]:
    """Texts, embeddings and true labels of blobs around random centres, plus scattered rows."""
    rng = np.random.default_rng(seed)
    centres = {name: _unit(rng.normal(size=DIMS)) for name in sizes}
    texts: list[str | None] = []
    rows: list[np.ndarray] = []
    labels: list[str] = []
    for name, n in sizes.items():
        words = WORDS[name]
        for i in range(n):
            texts.append(f"{SHARED} {words[i % 3]} {words[(i + 1) % 3]} case {i}")
            rows.append(_unit(centres[name] + rng.normal(scale=0.02, size=DIMS)))
            labels.append(name)
    for i in range(noise):
        texts.append(f"{SHARED} something unrelated number {i}")
        rows.append(_unit(rng.normal(size=DIMS)))
        labels.append("noise")
    return texts, np.stack(rows), labels, centres


def _discover(texts: list[str | None], emb: np.ndarray, **kwargs: object) -> Discovery:
    defaults: dict[str, object] = {"window_rows": 1000, "known_labels": [], "known_centroids": []}
    defaults.update(kwargs)
    return discover(texts=texts, embeddings=emb, **defaults)  # type: ignore[arg-type]


def test_blobs_are_recovered_pure_and_whole() -> None:
    texts, emb, labels, _ = _blobs({"crypto": 40, "pension": 30, "mortgage": 20}, noise=15)
    d = _discover(texts, emb)
    assert [c.size for c in d.clusters] == [40, 30, 20]
    assert [c.id for c in d.clusters] == [0, 1, 2]
    assert d.unclustered == 15 and d.excluded == 0 and d.rows == len(texts)
    assert d.clusters[0].share == pytest.approx(40 / 1000)
    pc = purity_coverage(d, labels)
    for name in WORDS:
        assert pc[name]["purity"] == 1.0
        assert pc[name]["coverage"] == 1.0
    assert pc["noise"]["cluster"] == -1.0


def test_sampled_clustering_assigns_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the cap, rows outside the sample join the cluster they resemble; noise stays out.
    monkeypatch.setattr(discovery, "MAX_CLUSTERED", 40)
    texts, emb, labels, _ = _blobs({"crypto": 50, "pension": 30, "mortgage": 20}, noise=10)
    d = _discover(texts, emb)
    pc = purity_coverage(d, labels)
    assert all(pc[name]["purity"] == 1.0 and pc[name]["coverage"] == 1.0 for name in WORDS)
    assert d.unclustered == 10
    again = _discover(texts, emb)
    assert again.as_dict() == d.as_dict()


def test_terms_name_the_clusters_distinctive_words() -> None:
    texts, emb, _, _ = _blobs({"crypto": 30, "pension": 20}, noise=5)
    d = _discover(texts, emb, terms=3)
    assert set(d.clusters[0].top_terms) == set(WORDS["crypto"])
    assert set(d.clusters[1].top_terms) == set(WORDS["pension"])
    # Words shared by every cluster rank below the distinctive ones; stop words never appear.
    full = _discover(texts, emb, terms=50)
    terms = full.clusters[0].top_terms
    assert "my" not in terms and "with" not in terms
    assert terms.index("account") > max(terms.index(w) for w in WORDS["crypto"])


def test_examples_are_distinct_members_nearest_the_centre() -> None:
    texts, emb, _, centres = _blobs({"crypto": 30}, noise=3)
    texts[5] = texts[6]  # a duplicate text is shown once
    emb[7] = centres["crypto"]
    texts[7] = "the most typical crypto request"
    d = _discover(texts, emb, examples=5)
    cluster = d.clusters[0]
    assert cluster.examples[0] == "the most typical crypto request"
    assert len(cluster.examples) == 5 == len(set(cluster.examples))
    member_texts = {texts[i] for i in cluster.members}
    assert set(cluster.examples) <= member_texts


def test_nearest_label_is_the_nearest_known_centroid() -> None:
    texts, emb, _, centres = _blobs({"crypto": 30, "pension": 20})
    other = _unit(np.random.default_rng(9).normal(size=DIMS))
    d = _discover(
        texts,
        emb,
        known_labels=["pension_plans", "cards"],
        known_centroids=np.stack([centres["pension"], other]),
    )
    crypto, pension = d.clusters
    assert pension.nearest_label == "pension_plans"
    assert pension.nearest_distance is not None and pension.nearest_distance < 0.05
    # The crypto blob is new: its nearest known label is far away.
    assert crypto.nearest_distance is not None and crypto.nearest_distance > 0.8


def test_known_centroids_of_another_size_give_no_label() -> None:
    texts, emb, _, _ = _blobs({"crypto": 20})
    d = _discover(texts, emb, known_labels=["a"], known_centroids=np.ones((1, 8)))
    assert d.clusters[0].nearest_label is None and d.clusters[0].nearest_distance is None
    assert any("do not match" in note for note in d.notes)


@pytest.mark.parametrize("embeddings", [np.zeros((0, DIMS)), np.zeros(0), []])
def test_no_rows(embeddings: object) -> None:
    d = _discover([], embeddings)  # type: ignore[arg-type]
    assert d.clusters == () and d.rows == 0 and d.unclustered == 0
    assert d.headline() == "no clusters among 0 out-of-scope requests"
    assert d.notes


def test_fewer_rows_than_min_cluster_size() -> None:
    texts, emb, _, _ = _blobs({"crypto": 7})
    d = _discover(texts, emb, min_cluster_size=10)
    assert d.clusters == () and d.unclustered == 7
    assert any("min_cluster_size=10" in note for note in d.notes)
    assert d.headline() == "no clusters among 7 out-of-scope requests"


def test_clusters_of_one_when_allowed() -> None:
    texts, emb, _, _ = _blobs({"crypto": 1})
    d = _discover(texts, emb, min_cluster_size=1)
    assert [c.size for c in d.clusters] == [1] and d.clusters[0].members == (0,)
    # Two unrelated rows: two clusters of one each, none unclustered.
    two = _discover(["a bitcoin", "a pension"], _unit(np.eye(2, DIMS)), min_cluster_size=1)
    assert [c.size for c in two.clusters] == [1, 1] and two.unclustered == 0
    # The default minimum leaves the same single row unclustered.
    assert _discover(texts, emb, min_cluster_size=2).clusters == ()


def test_identical_rows_form_one_cluster() -> None:
    emb = np.tile(_unit(np.arange(1.0, DIMS + 1.0)), (20, 1))
    d = _discover(["my crypto withdrawal never arrived"] * 20, emb)
    assert [c.size for c in d.clusters] == [20]
    assert d.clusters[0].examples == ("my crypto withdrawal never arrived",)


def test_nan_and_zero_rows_are_excluded_and_counted() -> None:
    texts, emb, labels, _ = _blobs({"crypto": 20, "pension": 15})
    emb[[0, 3]] = np.nan
    emb[4] = 0.0
    d = _discover(texts, emb)
    assert d.excluded == 3 and d.rows == 35
    assert sum(c.size for c in d.clusters) + d.unclustered + d.excluded == d.rows
    members = {m for c in d.clusters for m in c.members}
    assert not members & {0, 3, 4}
    assert purity_coverage(d, labels)["crypto"]["purity"] == 1.0

    all_nan = _discover(texts, np.full_like(emb, np.nan))
    assert all_nan.clusters == () and all_nan.excluded == 35 and all_nan.unclustered == 0


def test_withheld_texts_still_cluster_without_examples_or_terms() -> None:
    _, emb, labels, _ = _blobs({"crypto": 25, "pension": 15})
    d = _discover([None] * len(emb), emb)
    assert [c.size for c in d.clusters] == [25, 15]
    assert all(c.examples == () and c.top_terms == () for c in d.clusters)
    assert d.withheld == 40
    assert purity_coverage(d, labels)["pension"] == {
        "cluster": 1.0,
        "rows": 15.0,
        "purity": 1.0,
        "coverage": 1.0,
    }
    assert d.headline() == "2 clusters of new traffic, largest: 25 requests"
    # Some texts withheld: examples and terms come from the rows that have one.
    texts, emb, _, _ = _blobs({"crypto": 25})
    partial: list[str | None] = [t if i % 2 else None for i, t in enumerate(texts)]
    c = _discover(partial, emb).clusters[0]
    assert c.size == 25 and c.examples and set(c.examples) <= {t for t in partial if t}
    assert "crypto" in c.top_terms


def test_as_dict_is_plain_json() -> None:
    texts, emb, _, centres = _blobs({"crypto": 30, "pension": 20}, noise=5)
    emb[1] = np.nan
    d = _discover(texts, emb, known_labels=["pension"], known_centroids=centres["pension"][None, :])
    data = d.as_dict()
    assert json.loads(json.dumps(data)) == data
    first = data["clusters"][0]
    assert type(first["size"]) is int and type(first["members"][0]) is int
    assert type(first["share"]) is float and type(first["nearest_distance"]) is float
    assert data["excluded"] == 1 and data["headline"] == d.headline()


def test_headline_wording() -> None:
    texts, emb, _, _ = _blobs({"crypto": 30, "pension": 20})
    d = _discover(texts, emb)
    assert d.headline() == (
        f"2 clusters of new traffic, largest: 30 requests like '{d.clusters[0].examples[0]}'"
    )

    def one(terms: tuple[str, ...], examples: tuple[str, ...]) -> str:
        cluster = Cluster(0, 118, 0.1, terms, examples, None, None, tuple(range(118)))
        return Discovery((cluster,), 130, 1180, 12, 0, 0).headline()

    assert one(("crypto", "withdrawal"), ()) == (
        "1 cluster of new traffic, largest: 118 requests, terms: crypto, withdrawal"
    )
    assert one((), ()) == "1 cluster of new traffic, largest: 118 requests"
    long = one((), ("x" * 200,))
    assert long.endswith("…'") and len(long) < 150


def test_table_has_one_row_per_cluster() -> None:
    texts, emb, _, _ = _blobs({"crypto": 30, "pension": 20})
    d = _discover(texts, emb, terms=3)
    table = discovery_table(d)
    assert list(table["id"]) == [0, 1] and list(table["size"]) == [30, 20]
    assert set(table["top_terms"][0].split(", ")) == set(WORDS["crypto"])
    assert table["example"][1] == d.clusters[1].examples[0]
    assert discovery_table(_discover([], np.zeros((0, DIMS)))).empty


def test_map_renders(tmp_path: Path) -> None:
    texts, emb, _, centres = _blobs({"crypto": 30, "pension": 20}, noise=5)
    emb[2] = np.nan
    d = _discover(texts, emb)
    fig = discovery_map(d, emb, np.stack(list(centres.values())), list(centres))
    out = tmp_path / "map.png"
    fig.savefig(out)
    assert out.stat().st_size > 1000
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert labels == set(centres)
    # Nothing to map is a figure that says so, not an error.
    empty = discovery_map(
        _discover([], np.zeros((0, DIMS))), np.zeros((0, DIMS)), np.zeros((0, DIMS)), []
    )
    empty.savefig(tmp_path / "empty.png")
    assert "too few" in empty.axes[0].texts[0].get_text()


def test_purity_coverage_on_a_hand_made_case() -> None:
    clusters = (
        Cluster(0, 4, 0.4, (), (), None, None, (0, 1, 2, 3)),
        Cluster(1, 2, 0.2, (), (), None, None, (4, 5)),
    )
    d = Discovery(clusters, rows=8, window_rows=10, unclustered=2, excluded=0, withheld=0)
    pc = purity_coverage(d, ["a", "a", "a", "b", "b", "b", "c", "a"])
    assert pc["a"] == {"cluster": 0.0, "rows": 4.0, "purity": 0.75, "coverage": 0.75}
    assert pc["b"] == {"cluster": 1.0, "rows": 3.0, "purity": 1.0, "coverage": pytest.approx(2 / 3)}
    assert pc["c"] == {"cluster": -1.0, "rows": 1.0, "purity": 0.0, "coverage": 0.0}
    with pytest.raises(ValueError, match="align"):
        purity_coverage(d, ["a"])


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="must align"):
        _discover(["one", "two"], np.zeros((3, DIMS)))


def test_a_hidden_group_is_described_after_the_clusters_and_not_clustered() -> None:
    # Rows handed in as hidden under a known label stay one group as they are: here the
    # "pension" blob, which the clusterer would otherwise find on its own.
    texts, emb, labels, centres = _blobs({"crypto": 40, "pension": 30}, noise=10)
    pension = [i for i, label in enumerate(labels) if label == "pension"]
    d = _discover(
        texts,
        emb,
        known_labels=["retirement_plan"],
        known_centroids=[centres["pension"]],
        hidden={"retirement_plan": pension},
        terms=3,
    )
    assert [(c.size, c.hidden_under) for c in d.clusters] == [(40, None), (30, "retirement_plan")]
    assert list(d.clusters[1].members) == pension
    assert set(d.clusters[1].top_terms) == set(WORDS["pension"])
    assert d.clusters[1].nearest_label == "retirement_plan"
    assert d.unclustered == 10 and sum(c.size for c in d.clusters) + d.unclustered == d.rows
    line = d.headline()
    assert line.startswith("1 cluster of new traffic, largest: 40 requests like")
    assert "30 requests answered 'retirement_plan' beyond its usual share" in line
    assert d.as_dict()["clusters"][1]["hidden_under"] == "retirement_plan"


def test_hidden_groups_alone_and_too_small() -> None:
    texts, emb, labels, _ = _blobs({"crypto": 12, "pension": 5})
    crypto = [i for i, label in enumerate(labels) if label == "crypto"]
    pension = [i for i, label in enumerate(labels) if label == "pension"]
    # Only hidden rows, nothing else to cluster: the group still forms.
    alone = _discover(
        [texts[i] for i in crypto], emb[crypto], hidden={"card": list(range(len(crypto)))}
    )
    assert [(c.size, c.hidden_under) for c in alone.clusters] == [(12, "card")]
    assert alone.headline().startswith("no clusters among 0 out-of-scope requests; 12 requests")
    # A group under min_cluster_size is left out and its rows count as unclustered.
    small = _discover(texts, emb, min_cluster_size=10, hidden={"card": pension})
    assert [c.hidden_under for c in small.clusters] == [None]
    assert small.unclustered == 5
    # Positions that do not exist or have no usable embedding are ignored, not an error.
    emb_nan = emb.copy()
    emb_nan[pension[0]] = np.nan
    odd = _discover(texts, emb_nan, min_cluster_size=3, hidden={"card": [*pension, 999]})
    assert [c.size for c in odd.clusters if c.hidden_under == "card"] == [4]
