"""Benchmark: the sequential gate against today's fixed-n McNemar gate, looking at every pair.

    .venv/bin/python bench/gate.py [--task both|classification|extraction] [--runs 2000]
        [--discordant 0.15] [--min-samples 200] [--every 1] [--alpha 0.05]

For each true accuracy difference d in {-5, 0, +2, +5, +10} points, ``--runs`` simulated
sequences of labelled shadow pairs: the champion right 80% of the time, the challenger
80% + d, their correctness correlated so that ``--discordant`` of the pairs have exactly one
model right (15%: two fine-tunes of one base mostly agree). Both gates look after every
labelled pair (``--every``), at the same alpha (0.05), margin 0:

- today's gate, as it was: nothing before ``min_samples`` labelled pairs; then a one-sided
  exact McNemar test (binomial on the discordant pairs) for better (promote) and for worse
  (reject) at alpha, reading the fixed-n p-value at every look; undecided at 4 x
  ``min_samples``: rejected.
- the sequential gate (``lifecycle.promotion.sequential``, the very arithmetic ``gate()`` runs):
  promote when the e-value for better reaches 1/alpha, reject when the one for worse does,
  undecided at ``sample_cap`` (2 x ``min_samples``): rejected.

Per d and gate: promotion rate (for d <= 0 a false promotion: must be <= alpha), rejection
rate on evidence (worse), the share still undecided at the cap (rejected by it), and the
median and p90 of labelled pairs to a decision. Floors (exit 1 if one fails): the
sequential gate's false-promotion rate <= alpha for every d <= 0, and its median labelled
pairs to a decision at d = +5 <= 0.5 x today's gate's.

Extraction (``--task extraction``; both sections by default): the outcome of a labelled
request is ``X = F1_challenger - F1_champion`` in [-1, 1]. Per true F1 difference d in
{-5, 0, +2, +5, +10} points, ``--runs`` sequences of ``sample_cap`` requests: ties on
``1 - --discordant-requests`` of them (both models equal F1; both exact matches 85% of the
time), partial credit on the rest (|X| in {1/3, 1/2, 2/3, 1}, the higher-scoring model an
exact match 70% of the time, the sign tilted to make E[X] = d). At every look (``--every``),
from ``min_samples`` to the cap, the same alpha and margin 0:

- the old fixed-n rule (``lifecycle.promotion.paired`` before it went sequential), read at
  every look: promote when the ``1 - 2 alpha`` interval's lower bound is > 0 and the
  one-sided Wilcoxon signed-rank p-value (ties dropped) < alpha and exact match is not
  significantly worse (two-sided exact McNemar at alpha); reject when the upper bound < 0;
  undecided at the cap: rejected. Vectorised over all looks, so with normal approximations:
  the interval is ``mean -/+ z sd / sqrt(n)`` (the bootstrap's large-sample form; the gate
  used BCa) and Wilcoxon's normal approximation with the tie correction (what scipy uses
  once ties are present; a self-check below compares it with scipy's);
- the new rule (``extraction_gate_decision``): the bounded e-values of
  ``lifecycle.promotion.sequential.log_e_value_bounded`` at 1/alpha, with the same McNemar
  veto, "wait" below ``min_samples`` and the cap; and the e-values alone (no
  ``min_samples``) to show what that waiting costs.

Floor (exit 1 if it fails): the new rule's false promotion rate <= alpha + 3 binomial
standard errors at every d <= 0. Results also go to ``bench/gate_extraction_results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DIFFERENCES = (-0.05, 0.0, 0.02, 0.05, 0.10)
CHAMPION_ACCURACY = 0.80


@dataclass(frozen=True)
class Row:
    gate: str
    difference: float
    promoted: float
    rejected: float
    at_cap: float
    median: float
    p90: float


def simulate(
    difference: float, *, runs: int, n: int, discordant: float, seed: int
) -> tuple[Any, Any]:
    """Cumulative (wins, losses) per sequence and look: arrays of shape (runs, n)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    win, loss = (discordant + difference) / 2, (discordant - difference) / 2
    if min(win, loss) < 0 or CHAMPION_ACCURACY - loss < 0:
        raise ValueError(f"a difference of {difference} needs more than {discordant} discordant")
    u = rng.random((runs, n))
    wins = np.cumsum(u < win, axis=1, dtype=np.int32)
    losses = np.cumsum((u >= win) & (u < win + loss), axis=1, dtype=np.int32)
    return wins, losses


def first_true(flags: Any) -> Any:
    """Index of the first True per row, or the row length where there is none."""
    import numpy as np

    return np.where(flags.any(axis=1), flags.argmax(axis=1), flags.shape[1])


def decide(name: str, difference: float, promote: Any, reject: Any, cap: int, looks: Any) -> Row:
    """First look at which either flag holds, else the cap (rejected there)."""
    import numpy as np

    promote = promote & (looks <= cap)
    reject = reject & (looks <= cap)
    first_p, first_r = first_true(promote), first_true(reject)
    promoted = first_p < first_r
    rejected = (first_r < first_p) & (first_r < promote.shape[1])
    at = np.minimum(first_p, first_r)
    pairs = np.where(at < promote.shape[1], looks[np.minimum(at, len(looks) - 1)], cap)
    return Row(
        gate=name,
        difference=difference,
        promoted=float(promoted.mean()),
        rejected=float(rejected.mean()),
        at_cap=float((~promoted & ~rejected).mean()),
        median=float(np.median(pairs)),
        p90=float(np.percentile(pairs, 90)),
    )


def todays_gate(
    wins: Any, losses: Any, looks: Any, *, alpha: float, min_samples: int, difference: float
) -> Row:
    """The fixed-n gate this replaces: exact one-sided McNemar read at every look."""
    import numpy as np
    from scipy.stats import binom

    w, lo = wins[:, looks - 1], losses[:, looks - 1]
    m = w + lo
    with np.errstate(invalid="ignore"):
        p_better = np.where(m > 0, binom.sf(w - 1, m, 0.5), 1.0)
        p_worse = np.where(m > 0, binom.cdf(w, m, 0.5), 1.0)
    ready = looks >= min_samples
    promote = (p_better < alpha) & (w > lo) & ready
    reject = (p_worse < alpha) & ready & ~promote
    return decide("fixed-n McNemar (today)", difference, promote, reject, 4 * min_samples, looks)


def sequential_gate(
    wins: Any, losses: Any, looks: Any, *, alpha: float, cap: int, difference: float
) -> Row:
    """The new gate's decision rule on the same sequences (margin 0: no ties needed)."""
    from lifecycle.promotion.sequential import log_e_value

    w, lo = wins[:, looks - 1], losses[:, looks - 1]
    bar = math.log(1 / alpha)
    promote = log_e_value(w, lo) >= bar
    reject = (log_e_value(lo, w) >= bar) & ~promote
    return decide("sequential e-value (new)", difference, promote, reject, cap, looks)


def classification(args: argparse.Namespace) -> list[str]:
    """The classifier's section: prints its table, returns its failed floors."""
    import numpy as np

    from lifecycle.config.spec import PromotionSpec

    policy = PromotionSpec(min_samples=args.min_samples, alpha=args.alpha)
    horizon = 4 * policy.min_samples  # today's cap, the longer of the two
    looks = np.arange(args.every, horizon + 1, args.every)
    started = time.perf_counter()
    rows: list[Row] = []
    for i, d in enumerate(DIFFERENCES):
        wins, losses = simulate(
            d, runs=args.runs, n=horizon, discordant=args.discordant, seed=1000 + i
        )
        common = {"alpha": policy.alpha, "difference": d}
        rows.append(todays_gate(wins, losses, looks, min_samples=policy.min_samples, **common))
        rows.append(sequential_gate(wins, losses, looks, cap=policy.sample_cap, **common))
    seconds = time.perf_counter() - started

    print(
        f"Classification: {args.runs} sequences per difference; champion "
        f"{CHAMPION_ACCURACY:.0%}, {args.discordant:.0%} discordant pairs; alpha "
        f"{policy.alpha}, margin 0; a look every {args.every} labelled pair(s); min_samples "
        f"{policy.min_samples} (today's cap {horizon}, the sequential cap {policy.sample_cap}); "
        f"{seconds:.1f} s on {platform.machine()}, python {platform.python_version()}\n"
    )
    _table(rows)

    failures: list[str] = []
    new = {r.difference: r for r in rows if r.gate.startswith("sequential")}
    old = {r.difference: r for r in rows if r.gate.startswith("fixed")}
    for d, r in new.items():
        if d <= 0 and r.promoted > policy.alpha:
            failures.append(f"false promotions at d={d:+.2f}: {r.promoted:.1%} > {policy.alpha}")
    ratio = new[0.05].median / old[0.05].median
    # A single fixed-n test designed for exactly d = +5 needs this many pairs for even odds:
    # no test, sequential or not, decides most +5 challengers with fewer.
    z = 1.6448536269514722  # one-sided 5%
    even_odds = z * z * args.discordant / 0.05**2
    print(
        f"\nd=+5: median labelled pairs to a decision, sequential / today: {new[0.05].median:.0f}"
        f" / {old[0.05].median:.0f} = {ratio:.2f} (floor <= 0.5). For scale: a fixed-n test "
        f"at alpha {policy.alpha} needs ~{even_odds:.0f} pairs for a 50% chance to show d=+5."
    )
    if ratio > 0.5:
        failures.append(f"d=+5 median ratio {ratio:.2f} > 0.5")
    for d in (-0.05, 0.0):
        print(
            f"d={d * 100:+.0f}: false promotions, today {old[d].promoted:.1%} vs sequential "
            f"{new[d].promoted:.1%} (alpha {policy.alpha:.0%})"
        )
    return failures


def _table(rows: list[Row]) -> None:
    print(
        "| d (points) | gate | promoted | rejected (worse) | undecided at cap "
        "| median pairs | p90 pairs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.difference * 100:+.0f} | {r.gate} | {r.promoted:.1%} | {r.rejected:.1%} | "
            f"{r.at_cap:.1%} | {r.median:.0f} | {r.p90:.0f} |"
        )


# --------------------------------------------------------------------------- extraction

#: |X| on a request where the two models' F1 differ, and how often each occurs.
MAGNITUDES = (1 / 3, 1 / 2, 2 / 3, 1.0)
MAGNITUDE_P = (0.3, 0.3, 0.2, 0.2)


@dataclass(frozen=True)
class Requests:
    """Simulated labelled requests, shape (runs, n): the F1 difference and exact matches."""

    x: Any
    champion_exact: Any
    challenger_exact: Any


def simulate_requests(
    difference: float, *, runs: int, n: int, discordant: float, seed: int
) -> Requests:
    """Per-request F1 pairs with mean difference ``difference`` (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mean_m = float(np.dot(MAGNITUDES, MAGNITUDE_P))
    up = 0.5 + difference / (2 * discordant * mean_m)
    if not 0 <= up <= 1:
        raise ValueError(f"a difference of {difference} needs more than {discordant} discordant")
    differs = rng.random((runs, n)) < discordant
    magnitude = rng.choice(MAGNITUDES, size=(runs, n), p=MAGNITUDE_P)
    sign = np.where(rng.random((runs, n)) < up, 1.0, -1.0)
    x = np.where(differs, sign * magnitude, 0.0)
    # The higher-scoring model is an exact match 70% of the time (the other scored 1 - |X|),
    # else the lower one scored 0 and the higher |X| (exact only when |X| = 1).
    high_exact = (rng.random((runs, n)) < 0.7) | (magnitude == 1.0)
    both_exact = rng.random((runs, n)) < 0.85
    champion_exact = np.where(differs, (sign < 0) & high_exact, both_exact)
    challenger_exact = np.where(differs, (sign > 0) & high_exact, both_exact)
    return Requests(x=x, champion_exact=champion_exact, challenger_exact=challenger_exact)


def _exact_worse(r: Requests, looks: Any, alpha: float) -> Any:
    """At each look: the challenger's exact match significantly lower (two-sided exact
    McNemar at alpha), as ``PairedScores.exact_worse``."""
    import numpy as np
    from scipy.stats import binom

    champion_only = np.cumsum(r.champion_exact & ~r.challenger_exact, axis=1)[:, looks - 1]
    challenger_only = np.cumsum(~r.champion_exact & r.challenger_exact, axis=1)[:, looks - 1]
    m = champion_only + challenger_only
    low = np.minimum(champion_only, challenger_only)
    p = np.where(m > 0, np.minimum(1.0, 2 * binom.cdf(low, m, 0.5)), 1.0)
    return (p < alpha) & (challenger_only < champion_only)


def wilcoxon_greater(x: Any, looks: Any) -> Any:
    """One-sided Wilcoxon signed-rank p-values (ties at 0 dropped, normal approximation with
    the tie correction, no continuity correction: scipy's once ties are present) of every
    prefix ``x[:, :look]``, from cumulative counts per magnitude and sign."""
    import numpy as np
    from scipy.stats import norm

    shape = (x.shape[0], len(looks))
    below = np.zeros(shape)  # nonzero outcomes of smaller magnitude
    t_plus = np.zeros(shape)
    ties = np.zeros(shape)
    for m in MAGNITUDES:
        pos = np.cumsum(np.isclose(x, m), axis=1)[:, looks - 1].astype(float)
        neg = np.cumsum(np.isclose(x, -m), axis=1)[:, looks - 1].astype(float)
        count = pos + neg
        t_plus += pos * (below + (count + 1) / 2)  # midranks
        ties += count**3 - count
        below += count
    n = below
    var = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (t_plus - n * (n + 1) / 4) / np.sqrt(var)
    return np.where(n > 0, norm.sf(z), 1.0)


def extraction_rules(
    r: Requests, looks: Any, *, alpha: float, min_samples: int, cap: int, difference: float
) -> list[Row]:
    """The old fixed-n rule, the new sequential rule and the e-values alone, at every look."""
    import numpy as np

    from lifecycle.promotion.sequential import log_e_value_bounded

    n = looks.astype(float)
    ready = looks >= min_samples
    exact_worse = _exact_worse(r, looks, alpha)
    sums = np.cumsum(r.x, axis=1)[:, looks - 1]
    squares = np.cumsum(r.x**2, axis=1)[:, looks - 1]
    mean = sums / n
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(squares - n * mean**2, 0.0) / np.maximum(n - 1, 1))
    z = 1.6448536269514722 if math.isclose(alpha, 0.05) else _z(alpha)
    low, high = mean - z * sd / np.sqrt(n), mean + z * sd / np.sqrt(n)
    old_better = (low > 0) & (wilcoxon_greater(r.x, looks) < alpha) & ~exact_worse
    old = decide(
        "fixed-n bootstrap+Wilcoxon (old)",
        difference,
        old_better & ready,
        (high < 0) & ready & ~old_better,
        cap,
        looks,
    )
    bar = math.log(1 / alpha)
    better = log_e_value_bounded(r.x, running=True)[:, looks - 1] >= bar
    worse = log_e_value_bounded(-r.x, running=True)[:, looks - 1] >= bar
    promote = better & ~exact_worse
    new = decide(
        "sequential e-value (new)",
        difference,
        promote & ready,
        worse & ready & ~promote,
        cap,
        looks,
    )
    alone = decide(
        "e-value alone, no min_samples", difference, promote, worse & ~promote, cap, looks
    )
    return [old, new, alone]


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha))


def _check_wilcoxon(r: Requests, looks: Any) -> float:
    """Largest gap between the vectorised Wilcoxon p-values and scipy's on a few prefixes."""
    import numpy as np
    from scipy.stats import wilcoxon

    ours = wilcoxon_greater(r.x[:5], looks)
    gap = 0.0
    for i in range(5):
        for j in (0, len(looks) // 2, len(looks) - 1):
            d = r.x[i, : looks[j]]
            d = d[d != 0]
            if len(d):
                theirs = wilcoxon(d, alternative="greater", method="approx").pvalue
                gap = max(gap, abs(float(theirs) - float(ours[i, j])))
    return float(np.round(gap, 12))


def _check_rule(r: Requests, *, alpha: float, min_samples: int, cap: int) -> int:
    """Decisions of the gate's own function (``compare_paired`` and
    ``extraction_gate_decision`` on F1 values consistent with the simulation) that differ
    from the vectorised new rule's, on a few sequences and looks."""
    import numpy as np

    from lifecycle.promotion.paired import compare_paired, extraction_gate_decision
    from lifecycle.promotion.sequential import log_e_value_bounded

    m = np.abs(r.x)
    high_exact = np.where(r.x > 0, r.challenger_exact, r.champion_exact)
    high = np.where(high_exact, 1.0, m)
    tied = np.where(r.champion_exact, 1.0, 0.5)
    champion = np.where(r.x == 0, tied, np.where(r.x > 0, high - m, high))
    challenger = np.where(r.x == 0, tied, np.where(r.x > 0, high, high - m))
    looks = np.array([min_samples - 1, min_samples, (min_samples + cap) // 2, cap])
    bar = math.log(1 / alpha)
    better = log_e_value_bounded(r.x, running=True)[:, looks - 1] >= bar
    worse = log_e_value_bounded(-r.x, running=True)[:, looks - 1] >= bar
    promote = better & ~_exact_worse(r, looks, alpha)
    mismatches = 0
    for i in range(min(8, len(r.x))):
        for j, look in enumerate(looks):
            if look < min_samples:
                vectorised = "wait"
            elif promote[i, j]:
                vectorised = "promote"
            elif worse[i, j] or look >= cap:
                vectorised = "reject"
            else:
                vectorised = "wait"
            scores = compare_paired(
                champion[i, :look],
                challenger[i, :look],
                r.champion_exact[i, :look],
                r.challenger_exact[i, :look],
                alpha=alpha,
                resamples=20,
            )
            decided = extraction_gate_decision(
                scores, alpha=alpha, min_samples=min_samples, cap=cap
            )
            mismatches += decided != vectorised
    return mismatches


def extraction(args: argparse.Namespace) -> list[str]:
    """The extractor's section: prints its table, writes its JSON, returns failed floors."""
    import numpy as np

    from lifecycle.config.spec import PromotionSpec

    policy = PromotionSpec(min_samples=args.min_samples, alpha=args.alpha)
    cap = policy.sample_cap
    looks = np.arange(args.every, cap + 1, args.every)
    started = time.perf_counter()
    rows: list[Row] = []
    gap, mismatches = 0.0, 0
    for i, d in enumerate(DIFFERENCES):
        requests = simulate_requests(
            d, runs=args.runs, n=cap, discordant=args.discordant_requests, seed=2000 + i
        )
        if i == 0:
            gap = _check_wilcoxon(requests, looks)
        mismatches += _check_rule(
            requests, alpha=policy.alpha, min_samples=policy.min_samples, cap=cap
        )
        rows += extraction_rules(
            requests,
            looks,
            alpha=policy.alpha,
            min_samples=policy.min_samples,
            cap=cap,
            difference=d,
        )
    seconds = time.perf_counter() - started
    tolerance = 3 * math.sqrt(policy.alpha * (1 - policy.alpha) / args.runs)
    print(
        f"\nExtraction: {args.runs} sequences per F1 difference; "
        f"{args.discordant_requests:.0%} of requests with different F1 (partial credit), the "
        f"rest tied; alpha {policy.alpha}, margin 0; a look every {args.every} labelled "
        f"request(s) from min_samples {policy.min_samples} to the cap {cap} (both rules); "
        f"{seconds:.1f} s on {platform.machine()}, python {platform.python_version()}\n"
    )
    _table(rows)
    by = {(r.gate, r.difference): r for r in rows}
    new, old = "sequential e-value (new)", "fixed-n bootstrap+Wilcoxon (old)"
    failures = [
        f"extraction: false promotions at d={d:+.2f}: {by[new, d].promoted:.1%} > "
        f"{policy.alpha} + {tolerance:.3f}"
        for d in DIFFERENCES
        if d <= 0 and by[new, d].promoted > policy.alpha + tolerance
    ]
    print(
        f"\nd=+0: false promotions, old fixed-n rule read at every look "
        f"{by[old, 0.0].promoted:.1%} vs sequential {by[new, 0.0].promoted:.1%} (alpha "
        f"{policy.alpha:.0%}, floor for the sequential rule <= {policy.alpha + tolerance:.1%})"
        f"\nd=+5: median labelled requests to a decision, sequential {by[new, 0.05].median:.0f} "
        f"(promoted {by[new, 0.05].promoted:.1%}) vs old {by[old, 0.05].median:.0f} "
        f"(promoted {by[old, 0.05].promoted:.1%}); e-values alone "
        f"{by['e-value alone, no min_samples', 0.05].median:.0f}"
        f"\nself-checks: vectorised Wilcoxon p vs scipy's, largest gap {gap:.1e}; the new "
        f"rule vs the gate's own extraction_gate_decision on 8 sequences x 4 looks per d: "
        f"{mismatches} differ"
    )
    if gap > 1e-6:
        failures.append(f"extraction: vectorised Wilcoxon differs from scipy's by {gap:.2e}")
    if mismatches:
        failures.append(f"extraction: {mismatches} decisions differ from the gate's own")
    results = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "seconds": round(seconds, 1),
        "runs": args.runs,
        "alpha": policy.alpha,
        "min_samples": policy.min_samples,
        "cap": cap,
        "every": args.every,
        "discordant_requests": args.discordant_requests,
        "false_promotion_floor": policy.alpha + tolerance,
        "wilcoxon_gap": gap,
        "rule_mismatches": mismatches,
        "rows": [asdict(r) for r in rows],
        "failures": failures,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("both", "classification", "extraction"), default="both")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--discordant", type=float, default=0.15)
    parser.add_argument(
        "--discordant-requests",
        type=float,
        default=0.2,
        help="extraction: share of requests where the two models' F1 differ",
    )
    parser.add_argument("--min-samples", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--every", type=int, default=1, help="labelled pairs between looks")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("gate_extraction_results.json")
    )
    args = parser.parse_args(argv)
    failures: list[str] = []
    if args.task in ("both", "classification"):
        failures += classification(args)
    if args.task in ("both", "extraction"):
        failures += extraction(args)
    for failure in failures:
        print(f"FLOOR FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
