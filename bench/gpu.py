"""Benchmark on one data-centre GPU: LoRA training, the in-process limit and the gateway.

One script, meant to finish within 8 minutes on one GPU of the H100/H200 class:

1. training: the Banking77 specialist with bench/train.py's spec (4 epochs, LoRA r=16 on
   query/key/value, max_len 64) on the full train set: time to train (with and without the
   base model's load), training examples/s, and accuracy on the official test set;
2. that specialist registered in a temporary LIFECYCLE_HOME (bench/gateway.py's ``register``);
3. the in-process limit: ``AdapterHost.predict`` on the test set (x4), sorted by length, at
   batch 64 / 256 / 1024; the best is the limit;
4. the gateway: ``lifecycle serve`` (uvicorn, as a subprocess) with LIFECYCLE_DEVICE set and
   its defaults otherwise (bf16 autocast where the card supports it, one model worker on a
   GPU), at 1 and 16 texts per request, concurrency 64, with bench/gateway.py's load
   generator; one response in 10 is kept and each of its answers compared with the
   in-process answer for the same text (the text looked up in the gateway's traffic store
   by request id), as are 8 answers before the load;
5. the ``gpu``-marked tests (``pytest -m gpu`` over the test files that use the marker).

It prints gateway / limit for both request sizes (the ratios bench/gateway.py floors on 2
CPU cores; no floor is set for a GPU) and writes everything as JSON (--out).

    .venv/bin/python bench/gpu.py [--device auto|cuda|cpu] [--quick] [--out bench/gpu_results.json]

``--device cuda`` stops at once (exit 2) where CUDA is unavailable; ``auto`` takes CUDA when
present and otherwise says it runs on the CPU. ``--quick`` shrinks every size (8 intents,
16 training rows and up to 16 test rows each, 2 epochs, max_len 32; 128 texts for the limit;
2-second load points at concurrency 8): on the CPU it is a smoke run of the whole script,
which tests/bench/test_bench_gpu.py runs; its figures are not to be quoted.

Exit 1 when a check fails: an answer that differs from the in-process one (or a sample under
5% of the answers), test accuracy not above chance, an error under load, no throughput, a
``gpu`` test that fails, or any error on the way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This script runs as bench/gpu.py, so bench/ is on sys.path: reuse the gateway bench's parts.
import gateway as gb

ROOT = gb.ROOT
NAME = "banking77"
SEED = 0
CONCURRENCY = 64
#: Quick mode's concurrency: at 64 a 2-core CPU takes ~10 s to answer one round of 16-text
#: requests, longer than the whole point.
QUICK_CONCURRENCY = 8
#: Quick mode's training set: the first intents (by name) and rows of each.
QUICK_LABELS = 8
QUICK_ROWS_PER_LABEL = 16
#: bf16 autocast on a GPU: the same text's confidence moves by up to ~1e-2 with the batch it
#: rides in (other shapes, other kernels), so answers are compared with a wider tolerance
#: there than bench/gateway.py's float32 one.
BF16_TOLERANCE = 0.03


def log(message: str) -> None:
    gb.log(message)


def pick_device(choice: str) -> str | None:
    """The device to run on; None (after saying why) when CUDA is forced but unavailable."""
    import torch

    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        print(
            f"CUDA is unavailable (torch {torch.__version__}, CUDA build"
            f" {torch.version.cuda or 'none'}, {torch.cuda.device_count()} device(s)):"
            " --device cuda cannot run here",
            file=sys.stderr,
            flush=True,
        )
        return None
    if choice == "auto":
        if not available:
            log("CUDA is unavailable: running on the CPU (--device cuda would stop here)")
        return "cuda" if available else "cpu"
    return choice


# -- 1. training --


def train(data: Path, *, device: str, quick: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Train the Banking77 specialist; (spec, result, figures)."""
    from lifecycle.config.spec import LoraSpec, SpecialistSpec, TrainingSpec
    from lifecycle.training.data import load_table
    from lifecycle.training.evaluate import evaluate
    from lifecycle.training.train import predict_probabilities, train_specialist

    rows = load_table(data / "train.csv", label_column="category")
    test = load_table(data / "test.csv", label_column="category")
    lora = LoraSpec(r=16, alpha=32, target_modules=("query", "key", "value"))
    if quick:
        keep = sorted(rows["label"].unique())[:QUICK_LABELS]
        rows = (
            rows[rows["label"].isin(keep)]
            .groupby("label")
            .sample(n=QUICK_ROWS_PER_LABEL, random_state=SEED)
            .reset_index(drop=True)
        )
        test = (
            test[test["label"].isin(keep)]
            .groupby("label")
            .head(QUICK_ROWS_PER_LABEL)
            .reset_index(drop=True)
        )
        training = TrainingSpec(
            epochs=2, validation_fraction=0.2, evals_per_epoch=1, max_length=32, batch_size=16
        )
    else:
        training = TrainingSpec(epochs=4, validation_fraction=0.1, evals_per_epoch=2, max_length=64)
    spec = SpecialistSpec(name=NAME, training=training, lora=lora)
    labels = int(rows["label"].nunique())
    log(
        f"training: {len(rows)} rows of {labels} intents, {training.epochs} epochs,"
        f" LoRA r={lora.r} on {'/'.join(lora.target_modules)}, on {device}"
    )
    started = time.perf_counter()
    result = train_specialist(spec, rows, device=device, progress=False)
    wall = time.perf_counter() - started
    probs = predict_probabilities(result.host, result.adapter_id, test["text"].tolist())
    accuracy = float(evaluate(test["label"].tolist(), probs, result.meta.labels).accuracy)
    figures = {
        "rows": len(rows),
        "train_rows": len(result.train),
        "labels": labels,
        "epochs": training.epochs,
        "steps": result.steps,
        "seconds_with_model_load": wall,
        "seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "val_accuracy": float(result.evaluation.accuracy),
        "test_rows": len(test),
        "test_accuracy": accuracy,
        "chance": 1.0 / labels,
        "device": result.host.placement.device,
        "bf16": result.host.placement.autocast_bf16,
    }
    log(
        f"training: {wall:.1f} s ({result.seconds:.1f} s of steps, {result.steps} steps,"
        f" {result.examples_per_second:.0f} examples/s); test accuracy {accuracy:.3f}"
        f" on {len(test)} texts (chance {1.0 / labels:.3f})"
    )
    return spec, result, figures


# -- 3. the in-process limit --


def limit(oracle: gb.Oracle, texts: list[str], *, quick: bool) -> dict[str, Any]:
    """Texts/s of predict() on the served adapter, sorted by length, at large batches."""
    host, adapter_id = oracle.host, oracle.ids[NAME]
    sample = texts[:128] if quick else texts * 4
    # The first passes build CUDA kernels and grow the allocator's pools: not the steady state.
    host.predict(sample[: 64 if quick else 1024], adapter_id, batch_size=64)
    out: dict[str, Any] = {"texts": len(sample), "batches": {}}
    for batch in (64, 128) if quick else (64, 256, 1024):
        started = time.perf_counter()
        host.predict(sample, adapter_id, batch_size=batch)
        out["batches"][str(batch)] = len(sample) / (time.perf_counter() - started)
        log(f"limit: predict(), sorted, batch {batch}: {out['batches'][str(batch)]:.0f} texts/s")
    best = max(out["batches"], key=lambda k: out["batches"][k])
    out["best_batch"] = int(best)
    out["best"] = out["batches"][best]
    return out


# -- 4. the gateway --


def _client_seconds() -> float:
    """CPU of this process (the Python load generator runs in it) and of reaped children (wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _gpu_pids() -> list[int] | None:
    """Processes nvidia-smi sees on the GPUs; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    done = subprocess.run(
        [exe, "--query-compute-apps=pid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [int(x) for x in re.findall(r"\d+", done.stdout)] if done.returncode == 0 else None


def gateway(
    args: argparse.Namespace,
    procs: gb.Processes,
    st: gb.Setup,
    tmp: Path,
    oracle: gb.Oracle,
    texts: list[str],
    *,
    device: str,
) -> dict[str, Any]:
    from lifecycle.config.settings import Settings

    quick = args.quick
    seconds = args.duration or (2.0 if quick else 15.0)
    warm_s = 1.0 if quick else 5.0
    connections = QUICK_CONCURRENCY if quick else CONCURRENCY
    gen = gb.LoadGenerator(args.generator)
    log(f"load generator: {gen.description}")
    server = gb.start_gateway(
        procs, st, tmp, label="gateway", extra={"LIFECYCLE_DEVICE": device}, name=NAME
    )
    before, loaded = gb.Tally(), gb.Tally()
    check = texts[: gb.CHECK_TEXTS]
    labels, confidences = gb.check_gateway(server, NAME, check)
    oracle.compare(before, NAME, check, labels, confidences, where="gateway")
    path = f"/v1/specialists/{NAME}/predict"
    bodies = {}
    for per_request in (1, 16):
        bodies[per_request] = tmp / f"bodies-{per_request}.txt"
        gb.write_bodies(
            bodies[per_request],
            texts,
            per_request=per_request,
            paths=[path],
            make=gb.gateway_body,
        )
    gb.warm(gen, server, bodies[1], warm_s)
    gpu_pids = _gpu_pids() if device == "cuda" else None
    out: dict[str, Any] = {
        "device": device,
        "connections": connections,
        "load_generator": gen.description,
        "ready_seconds": server.ready_seconds,
        # None where nvidia-smi is absent or lists no process (a container hides them).
        "on_gpu": bool(set(gb.group_members(server.proc.pid)) & set(gpu_pids))
        if gpu_pids
        else None,
        "points": {},
    }
    answered = kept = 0
    for per_request, requests in bodies.items():
        record = tmp / f"answers-{per_request}.jsonl"
        client0, wall0 = _client_seconds(), time.perf_counter()
        point = gb.Point("gateway", per_request, connections)
        measured = gb.measure(gen, server, requests, point, seconds=seconds, record=record)
        client = (_client_seconds() - client0) / (time.perf_counter() - wall0)
        # A client near one busy core is the limit, not the gateway: its figure is a floor.
        measured["client_cpu_cores"] = client
        measured["client_bound"] = gen.kind == "python" and client > 0.9
        out["points"][str(per_request)] = measured
        answered += max(0, measured["requests"] - measured["non_2xx"]) * per_request
        gb.drain(server)
        kept += gb.check_recorded(
            record,
            oracle,
            Settings(home=st.home).traffic_url,
            loaded,
            where=f"{per_request} text(s)/request",
        )
    procs.stop(server.proc)
    out["answers"] = {
        "check_every": gb.CHECK_EVERY,
        "confidence_tolerance": oracle.confidence_tolerance,
        "answered_under_load": answered,
        "kept_under_load": kept,
        "share_checked": loaded.checked / answered if answered else 0.0,
        "under_load": loaded.as_dict(),
        "before_load": before.as_dict(),
    }
    return out


# -- 5. the gpu-marked tests --


def gpu_tests() -> dict[str, Any]:
    """``pytest -m gpu`` on the test files that use the marker (collecting every test module
    would import the whole stack for a handful of tests); on a machine without CUDA the
    tests skip themselves."""
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in path.read_text(encoding="utf-8", errors="replace")
    )
    if not files:
        return {"files": [], "returncode": None, "summary": "no gpu-marked tests", "ok": True}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    log(f"pytest -m gpu: {', '.join(files)}")
    done = subprocess.run([*command, *files], cwd=ROOT, capture_output=True, text=True, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else done.stderr.strip()[-300:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary)}
    # 5: nothing collected, which -m gpu over files that use the marker should not give.
    ok = done.returncode == 0
    if not ok:
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n", flush=True)
    return {
        "files": files,
        "returncode": done.returncode,
        "summary": summary,
        "counts": counts,
        "ok": ok,
    }


# -- the run --


def checks(results: dict[str, Any]) -> dict[str, bool]:
    training = results.get("training", {})
    gw = results.get("gateway", {})
    points = gw.get("points", {})
    answers = gw.get("answers", {})
    loaded, before = answers.get("under_load", {}), answers.get("before_load", {})
    faults = sum(t.get("mismatches", 0) + t.get("unverifiable", 0) for t in (loaded, before))
    return {
        "test accuracy above chance": training.get("test_accuracy", 0.0)
        > training.get("chance", 1.0),
        "limit texts/s > 0": results.get("limit", {}).get("best", 0.0) > 0,
        "gateway texts/s > 0 at 1 and 16 texts/request": len(points) == 2
        and all(p["texts_per_s"] > 0 for p in points.values()),
        "no errors under load": len(points) == 2
        and all(p["non_2xx"] + p["socket_errors"] == 0 for p in points.values()),
        "answers equal the in-process ones (>= 5% checked)": bool(answers)
        and faults == 0
        and answers.get("share_checked", 0.0) >= 0.05,
        "gpu tests pass": results.get("gpu_tests", {}).get("ok", False),
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else None


def run(args: argparse.Namespace, results: dict[str, Any], procs: gb.Processes, tmp: Path) -> None:
    device = results["device"]
    spec, result, figures = train(args.data, device=device, quick=args.quick)
    results["training"] = figures
    st = gb.register(
        tmp,
        spec,
        result,
        names=[NAME],
        train_seconds=figures["seconds_with_model_load"],
        train_rows=figures["rows"],
    )
    del result  # the training host: the limit and the gateway load the registered version

    texts = gb.test_texts(args.data)
    if args.quick:
        texts = texts[:512]
    bf16 = bool(figures["bf16"])
    tolerance = BF16_TOLERANCE if bf16 else gb.CONFIDENCE_TOLERANCE
    oracle = gb.Oracle.from_registry(
        st.home,
        [NAME],
        device=device,
        confidence_tolerance=tolerance,
        tie=BF16_TOLERANCE if bf16 else gb.TIE,
    )
    results["limit"] = limit(oracle, texts, quick=args.quick)
    results["gateway"] = gateway(args, procs, st, tmp, oracle, texts, device=device)
    points = results["gateway"]["points"]
    best = results["limit"]["best"]
    results["ratios"] = {
        f"gateway_{k}_over_limit": ratio(p["texts_per_s"], best) for k, p in points.items()
    }
    results["gpu_tests"] = gpu_tests()


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print()
    print(
        f"machine: {m['cpu_model']}, {m['cores']} cores, torch {m['torch']},"
        f" {m['cuda'] or 'no GPU'}; device {results['device']}"
        + (" (QUICK: tiny sizes, figures not to quote)" if results["quick"] else "")
    )
    t = results.get("training")
    if t:
        print(
            f"training: {t['rows']} rows of {t['labels']} intents, {t['epochs']} epochs,"
            f" {t['steps']} steps: {t['seconds_with_model_load']:.1f} s with the model load"
            f" ({t['seconds']:.1f} s of steps), {t['examples_per_second']:.0f} examples/s;"
            f" test accuracy {t['test_accuracy']:.3f} on {t['test_rows']} texts"
            f" (chance {t['chance']:.3f}); bf16 {t['bf16']}"
        )
    lim = results.get("limit")
    if lim:
        print(
            f"limit (in process, predict(), sorted, {lim['texts']} texts): "
            + ", ".join(f"b{k} {v:.0f}" for k, v in lim["batches"].items())
            + f" texts/s; best {lim['best']:.0f}"
        )
    gw = results.get("gateway")
    if gw:
        print(f"gateway ({gw['load_generator']}; on the GPU per nvidia-smi: {gw['on_gpu']}):")
        for k, p in gw["points"].items():
            print(
                f"  {k:>2} text(s)/request, c={gw['connections']}: {p['texts_per_s']:.1f} texts/s,"
                f" {p['requests_per_s']:.1f} req/s, p50 {p['p50_ms']:.1f} ms,"
                f" p99 {p['p99_ms']:.1f} ms, errors {p['non_2xx'] + p['socket_errors']},"
                f" client {p['client_cpu_cores']:.2f} cores"
                + (" (client-bound: a floor)" if p["client_bound"] else "")
            )
        a = gw["answers"]
        for when in ("before_load", "under_load"):
            tally = a[when]
            print(
                f"  answers {when.replace('_', ' ')}: {tally['checked']} checked against the"
                f" in-process ones, {tally['mismatches']} mismatches,"
                f" {tally['unverifiable']} unverifiable, {tally['ties']} near-ties"
                + "".join(f"\n    {example}" for example in tally["examples"])
            )
        print(
            f"  {a['under_load']['checked']} of {a['answered_under_load']} answers under load"
            f" checked ({a['share_checked']:.1%})"
        )
    for key, value in results.get("ratios", {}).items():
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"ratio {key.replace('_', ' ')}: {shown}")
    tests = results.get("gpu_tests")
    if tests:
        print(f"pytest -m gpu: {tests['summary']} (exit {tests['returncode']})")
    print()
    for name, ok in results.get("checks", {}).items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if results.get("error"):
        print(f"\nINCOMPLETE: {results['error']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--out", type=Path, default=gb.BENCH / "gpu_results.json")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke run.")
    parser.add_argument("--duration", type=float, default=None, help="Seconds per load point.")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (logs).")
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        parser.error(f"{args.data / 'train.csv'} not found; pass --data")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(SEED)

    device = pick_device(args.device)
    if device is None:
        return 2
    started = time.perf_counter()
    results: dict[str, Any] = {
        "quick": args.quick,
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": gb.machine(),
    }
    procs = gb.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    log(f"working folder {tmp}; device {device}")
    code = gb.run_reporting(run, args, results, procs, tmp)
    results["seconds"] = time.perf_counter() - started
    results["checks"] = checks(results)
    if not all(results["checks"].values()):
        code = 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report(results)
    print(f"\nwrote {args.out} in {results['seconds']:.0f} s; exit {code}")
    if args.keep or code:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
