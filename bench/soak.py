"""Soak: many requests at high concurrency against `lifecycle serve` with shadow on.

The gateway runs as a user runs it (a subprocess, SQLite traffic store, the write-ahead
log on), serving one specialist whose challenger shadows every request. One asyncio load
generator with ``--concurrency`` keep-alive connections sends ``--requests`` requests of
one text each. Checked, and printed with their floors:

- zero errors (every answer a 200);
- rows logged equal to requests (counted in the traffic database after a graceful stop);
- every request's shadow work accounted for: shadow rows stored (predictions and failures)
  + requests whose shadow was dropped (queue full) + shadow texts discarded at the stop
  (queued past LIFECYCLE_SHADOW_DRAIN_S) = shadowed requests (every request: one text each,
  ``shadow_sample_rate`` 1.0). The dropped and discarded counts come from the gateway's
  log line at shutdown, written after the drain, when /metrics is gone;
- answers right: a sample of answers equals the champion's own answers for the same texts,
  loaded from the registry into a host in this process;
- memory flat: the gateway's RSS at the end within 10% of its RSS after warm-up (the
  first 10% of the requests);
- latency percentiles and throughput (reported, no floor).

    .venv/bin/python bench/soak.py                          # 50,000 requests, concurrency 64
    .venv/bin/python bench/soak.py --requests 3000 --concurrency 16 --home H --out r.json

Without ``--home`` it trains a small specialist twice (champion and challenger) in a
temporary LIFECYCLE_HOME first (~1 minute on 2 cores). With it, the home's registry must
hold ``--specialist`` with a champion and a challenger. Exit status 1 when a floor fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "soak-admin-token"
SPEC: dict[str, Any] = {
    "name": "soaked",
    "data": {"kind": "generator", "n": 600, "seed": 3},
    "training": {"epochs": 1, "batch_size": 16, "max_length": 32, "evals_per_epoch": 1},
}
#: RSS at the end over RSS after warm-up, at most.
RSS_FLOOR = 1.10
#: Answers compared with the in-process champion's (spread over the run).
ANSWER_SAMPLE = 200
#: The gateway runs texts in batches of other sizes and lengths than the check: the same
#: answers up to float rounding. A label may differ only where the top two are that close.
CONFIDENCE_TOLERANCE = 1e-3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def prepare_home(home: Path, spec: dict[str, Any]) -> None:
    """Train the soak specialist twice: v1 champion, v2 challenger (shadowed)."""
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.training.pipeline import train_and_register

    settings = Settings(home=home, progress=False)
    parsed = SpecialistSpec.model_validate(spec)
    train_and_register(settings, parsed)
    train_and_register(settings, parsed, alias="challenger")


def texts_for_load(n: int) -> list[str]:
    from lifecycle.synthetic.scenarios import generate_tickets

    return [str(t) for t in generate_tickets(max(n, 200), seed=11)["text"].tolist()]


class Gateway:
    def __init__(self, home: Path, spec: dict[str, Any], log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        specs_file = home.parent / "soak-specialists.yaml"
        specs_file.write_text(json.dumps({"specialists": [spec]}))  # JSON is YAML
        env = {
            **os.environ,
            "LIFECYCLE_HOME": str(home),
            "LIFECYCLE_SPECIALISTS_FILE": str(specs_file),
            "LIFECYCLE_ADMIN_TOKEN": TOKEN,
            "LIFECYCLE_PORT": str(self.port),
            "LIFECYCLE_REGISTRY_POLL_S": "0",
            "LIFECYCLE_PROGRESS": "false",
        }
        env.pop("LIFECYCLE_TRAFFIC_DB_URL", None)
        self.log_file = log_file
        with open(log_file, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "lifecycle"), "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, name: str, timeout_s: float = 240.0) -> dict[str, Any]:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    listing = httpx.get(f"{self.url}/v1/specialists", timeout=10).json()
                    return next(s for s in listing["specialists"] if s["name"] == name)
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("gateway did not become ready")

    def metric(self, name: str) -> float:
        import httpx

        total = 0.0
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.split()[-1])
        return total

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


async def drive(
    url: str,
    name: str,
    texts: list[str],
    requests: int,
    concurrency: int,
    on_done: Any,
    answers: list[tuple[str, dict[str, Any]]] | None = None,
) -> tuple[list[float], list[str], float]:
    """Send ``requests`` one-text requests over ``concurrency`` connections; every
    ``requests // ANSWER_SAMPLE``-th answer (with its text) goes to ``answers``."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    sample_every = max(1, requests // ANSWER_SAMPLE)
    next_index = 0
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    path = f"/v1/specialists/{name}/predict"

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                next_index += 1
                sampled = answers is not None and next_index % sample_every == 0
                body = {"texts": [rng.choice(texts)]}
                started = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                    elif sampled and answers is not None:
                        answers.append((body["texts"][0], response.json()["predictions"][0]))
                latencies.append(time.perf_counter() - started)
                on_done(len(latencies))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, errors, wall


def stored_rows(home: Path, name: str) -> dict[str, int]:
    with sqlite3.connect(home / "traffic.db") as conn:
        count = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table} WHERE specialist = ?", (name,))
            for table in ("requests", "shadow_predictions", "shadow_failures")
        }
        return {table: int(cursor.fetchone()[0]) for table, cursor in count.items()}


def shutdown_counts(log_file: Path, name: str) -> dict[str, int] | None:
    """The specialist's shadow counts from the gateway's log line at shutdown (None: no
    such line, e.g. the gateway did not stop gracefully)."""
    from lifecycle.serving.app import SHADOW_COUNTS_LOG

    found = None
    for line in log_file.read_text(errors="replace").splitlines():
        if SHADOW_COUNTS_LOG in line:
            found = json.loads(line.split(SHADOW_COUNTS_LOG, 1)[1]).get(name, {})
    if found is None:
        return None
    return {k: int(found.get(k, 0)) for k in ("scored", "failed", "dropped", "discarded")}


def check_answers(
    home: Path, name: str, answers: list[tuple[str, dict[str, Any]]]
) -> tuple[int, list[str]]:
    """Compare the gateway's answers with the champion's own for the same texts, run in
    this process from the registry's copy: (answers compared, mismatches described)."""
    from lifecycle.config.settings import Settings
    from lifecycle.model.adapters import check_artifact
    from lifecycle.model.host import AdapterHost
    from lifecycle.registry.models import Registry

    answered = [(text, a) for text, a in answers if a.get("source") == "specialist"]
    if not answered:
        return 0, []
    settings = Settings(home=home, progress=False)  # LIFECYCLE_DEVICE as the gateway's
    info, folder = Registry(settings).download(name, "champion")
    host = AdapterHost(check_artifact(folder).base_model, device=settings.device)
    host.load_adapter("champion", folder)
    expected = host.predict([text for text, _ in answered], "champion")
    # bf16 on a GPU rounds differently in batches of other shapes: a looser bound there.
    tolerance = 0.02 if host.placement.autocast_bf16 else CONFIDENCE_TOLERANCE
    mismatches = []
    for (text, got), want in zip(answered, expected, strict=True):
        top = sorted(want.probabilities, reverse=True)
        near_tie = len(top) > 1 and top[0] - top[1] < tolerance
        if got["model_version"] != info.version:
            mismatches.append(f"{text!r}: version {got['model_version']}, champion {info.version}")
        elif got["label"] != want.label and not near_tie:
            mismatches.append(f"{text!r}: label {got['label']!r}, champion says {want.label!r}")
        elif abs(got["confidence"] - want.confidence) > tolerance and not near_tie:
            mismatches.append(
                f"{text!r}: confidence {got['confidence']:.5f}, champion {want.confidence:.5f}"
            )
    return len(answered), mismatches


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = dict(SPEC, name=args.specialist)
    if args.home is None:
        home = tmp / "home"
        log("training the soak specialist: champion and challenger")
        prepare_home(home, spec)
    else:
        home = Path(args.home).resolve()
    before = stored_rows(home, args.specialist) if (home / "traffic.db").exists() else None
    texts = texts_for_load(2000)
    log(f"starting the gateway on {home}")
    log_file = Path(args.log) if args.log else tmp / "gateway.log"
    gateway = Gateway(home, spec, log_file)
    answers: list[tuple[str, dict[str, Any]]] = []
    samples: list[tuple[int, int]] = []  # (requests done, rss)
    done = [0]
    warm_mark = max(1, args.requests // 10)
    warm_rss: list[int] = []
    stop_sampling = threading.Event()
    try:
        served = gateway.wait_ready(args.specialist)
        if not served.get("challenger"):
            raise RuntimeError(f"{args.specialist} has no challenger loaded: no shadow to soak")

        def sample() -> None:
            while not stop_sampling.wait(0.5):
                samples.append((done[0], rss_bytes(gateway.proc.pid)))

        def on_done(count: int) -> None:
            done[0] = count
            if count == warm_mark:
                warm_rss.append(rss_bytes(gateway.proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        log(f"{args.requests} requests at concurrency {args.concurrency}, shadow on")
        latencies, errors, wall = asyncio.run(
            drive(
                gateway.url,
                args.specialist,
                texts,
                args.requests,
                args.concurrency,
                on_done,
                answers,
            )
        )
        end_rss = rss_bytes(gateway.proc.pid)
        stop_sampling.set()
        sampler.join(timeout=5)
        dropped = gateway.metric("lifecycle_shadow_dropped_total")
    finally:
        stop_sampling.set()
        code = gateway.stop()
    rows = stored_rows(home, args.specialist)
    if before is not None:
        rows = {table: rows[table] - before[table] for table in rows}
    peak = max((rss for _, rss in samples), default=end_rss)
    counts = shutdown_counts(log_file, args.specialist)
    log(f"checking {len(answers)} answers against the champion run in this process")
    checked, mismatches = check_answers(home, args.specialist, answers)
    stored = rows["shadow_predictions"] + rows["shadow_failures"]
    # One text per request, so the per-request drop count and the per-text counts add up.
    accounted = None if counts is None else stored + counts["dropped"] + counts["discarded"]
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "errors": len(errors),
        "first_errors": errors[:5],
        "rows_logged": rows["requests"],
        "shadow_rows": rows["shadow_predictions"],
        "shadow_failures": rows["shadow_failures"],
        "shadow_requests_dropped": dropped,
        "shadow_requests": args.requests,
        "shadow_dropped": None if counts is None else counts["dropped"],
        "shadow_discarded": None if counts is None else counts["discarded"],
        "shadow_counts_at_shutdown": counts,
        "shadow_accounted": accounted,
        "answers_checked": checked,
        "answer_mismatch_count": len(mismatches),
        "answer_mismatches": mismatches[:10],
        "wall_s": wall,
        "requests_per_s": args.requests / wall,
        "latency_ms": {
            "p50": percentile(latencies, 50) * 1000,
            "p90": percentile(latencies, 90) * 1000,
            "p99": percentile(latencies, 99) * 1000,
            "max": max(latencies) * 1000,
            "mean": statistics.fmean(latencies) * 1000,
        },
        "rss_mb": {
            "after_warmup": warm_rss[0] / 2**20 if warm_rss else None,
            "end": end_rss / 2**20,
            "peak": peak / 2**20,
        },
        "rss_end_over_warmup": end_rss / warm_rss[0] if warm_rss else None,
        "gateway_exit": code,
        "rss_timeline_mb": [
            (n, round(r / 2**20, 1)) for n, r in samples[:: max(1, len(samples) // 40)]
        ],
    }
    result["verdicts"] = {
        "zero_errors": result["errors"] == 0,
        "rows_equal_requests": result["rows_logged"] == args.requests,
        "shadow_accounted": accounted == args.requests,
        "answers_right": checked > 0 and not mismatches,
        "rss_flat": result["rss_end_over_warmup"] is not None
        and result["rss_end_over_warmup"] <= RSS_FLOOR,
    }
    return result


def report(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    rss = result["rss_mb"]
    print()
    print(f"requests {result['requests']} at concurrency {result['concurrency']}, shadow on")
    print(
        f"  throughput        {result['requests_per_s']:.0f} requests/s ({result['wall_s']:.0f} s)"
    )
    print(
        f"  latency ms        p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
        f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}"
    )
    print(
        f"  shadow            {result['shadow_rows']} rows, {result['shadow_failures']} failures, "
        f"{result['shadow_dropped']} requests' shadow dropped (queue full), "
        f"{result['shadow_discarded']} discarded at the stop"
    )
    print(
        f"  RSS MB            after warm-up {rss['after_warmup']:.0f}, end {rss['end']:.0f}, "
        f"peak {rss['peak']:.0f}"
    )
    checks = [
        ("errors", f"{result['errors']}", "= 0", result["verdicts"]["zero_errors"]),
        (
            "rows logged",
            f"{result['rows_logged']}",
            f"= {result['requests']}",
            result["verdicts"]["rows_equal_requests"],
        ),
        (
            "shadow accounted",
            f"{result['shadow_accounted']}",
            f"= {result['shadow_requests']}",
            result["verdicts"]["shadow_accounted"],
        ),
        (
            "answers right",
            f"{result['answers_checked'] - result['answer_mismatch_count']}",
            f"= {result['answers_checked']}",
            result["verdicts"]["answers_right"],
        ),
        (
            "RSS end / after warm-up",
            f"{result['rss_end_over_warmup']:.3f}",
            f"<= {RSS_FLOOR}",
            result["verdicts"]["rss_flat"],
        ),
    ]
    for what, value, floor, ok in checks:
        print(f"  {what:<24}{value:>10}  {floor:<10}{'PASS' if ok else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--specialist", default=SPEC["name"])
    parser.add_argument("--home", help="a LIFECYCLE_HOME whose registry has the specialist")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--log", help="keep the gateway's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifecycle-soak-") as tmp:
        result = soak(args, Path(tmp))
    report(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
