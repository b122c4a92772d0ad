"""Benchmark: the sequential gate against today's fixed-n McNemar gate, looking at every pair.

    .venv/bin/python bench/gate.py [--runs 2000] [--discordant 0.15] [--min-samples 200]

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
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass
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


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from lifecycle.config.spec import PromotionSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--discordant", type=float, default=0.15)
    parser.add_argument("--min-samples", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--every", type=int, default=1, help="labelled pairs between looks")
    args = parser.parse_args(argv)
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
        f"{args.runs} sequences per difference; champion {CHAMPION_ACCURACY:.0%}, "
        f"{args.discordant:.0%} discordant pairs; alpha {policy.alpha}, margin 0; a look "
        f"every {args.every} labelled pair(s); min_samples {policy.min_samples} (today's cap "
        f"{horizon}, the sequential cap {policy.sample_cap}); {seconds:.1f} s on "
        f"{platform.machine()}, python {platform.python_version()}\n"
    )
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
    for failure in failures:
        print(f"FLOOR FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
