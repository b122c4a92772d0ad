"""Benchmark: the gateway against the model's own limit and against `mlflow models serve`.

Everything runs in one go, on the same texts (Banking77's test set, shuffled once
with a fixed seed), with one load generator (wrk when present, else a Python
asyncio + httpx generator with a fixed number of keep-alive connections):

1. limit: the raw forward in this process (AdapterHost.logits_and_embeddings), texts
   sorted by length, batch sizes 8/16/32/64 (packed, as the host runs on a CPU) and
   32/64 padded; two model workers; unsorted batches; batches of one. The limit is
   the best of them.
2. gateway: `lifecycle serve` as a subprocess; one sweep of 1 text per request at
   concurrency 1/4/16/64 and 16 texts per request at 1/4/16; the same gateway with
   LIFECYCLE_MAX_BATCH_SIZE=1 (no batching) at 1 text per request, concurrency 16. Per
   point it also reads the gateway's /metrics (mean batch, model-thread busy share) and
   the CPU of the server, of its event-loop thread, and of unrelated processes (noise).
   Each point starts once the work the previous one left queued is done.
3. `mlflow models serve` on the same adapter as a models-from-code pyfunc
   (bench/pyfunc_specialist.py), running beside the gateway.
4. 8 specialists on one base: requests spread at random over 8 vs all to one.
5. shadow: a specialist with a challenger vs one without, paced at ~30% of the
   capacity measured at concurrency 16; champion p50 latency on vs off.
6. the out-of-scope score (open-world issue): two `lifecycle serve` gateways up side by
   side, LIFECYCLE_OOD_SCORES on and off, the same load on each in turn (16 texts per
   request and 1 text per request, both at concurrency 16); throughput on / off. The
   adapter must carry its detector (ood.safetensors, fitted by training), and every
   answer is checked before and after the load: a float ood_score on, None off.

Every floor is checked in rounds (3 in full mode, --rounds to change): within a round the
two figures of a ratio are measured one after the other (the limit once more, then the
gateway at its best concurrency; the gateway and `mlflow models serve` at c=16; 8 adapters
and 1; shadow off and on; score on and off, in alternating order), and the verdict is the
median of the rounds' ratios. On a shared machine the speed drifts by more than the
floors' margins over a run.

It prints a table of ratios against their floors (PASS/FAIL) and writes everything as
JSON (--out). Setup trains one quick LoRA adapter (1 epoch on ~1,000 rows: accuracy is
not the point, the weights just have to be real) and registers it under every
specialist name in a temporary LIFECYCLE_HOME.

    .venv/bin/python bench/gateway.py [--quick] [--out bench/gateway_results.json]
    .venv/bin/python bench/gateway.py --only ood [--rounds 5]   # part 6 alone

Full mode takes ~18 minutes on 2 cores; --quick is a smoke run (~5 minutes) whose
figures are too short to quote; --only ood takes ~4 minutes plus ~1 per extra round (it
trains, and registers, only the one specialist it serves).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
LUA = BENCH / "_load.lua"
PYFUNC = BENCH / "pyfunc_specialist.py"
BIN = Path(sys.executable).parent
TOKEN = "x"
SEED = 0
#: Cores used by other processes during a measurement above which it is flagged as noisy.
NOISY = 0.25
#: Texts whose labels are compared across the in-process model, the gateway and the pyfunc.
CHECK_TEXTS = 8

#: Specialists served by the main gateway: eight plain ones (mix-0 is also the
#: single-specialist target of every other gateway point) and one with a challenger.
MIX = [f"mix-{i}" for i in range(8)]
SOLO = MIX[0]
SHADOWED = "shadowed"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- machine --


def machine() -> dict[str, Any]:
    import torch

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


# -- processes --


class Processes:
    """Every server subprocess, each in its own process group; all stopped on exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], *, env: dict[str, str], log_file: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        out = log_file.open("wb")
        try:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left of it after ``grace_s``."""
        if proc in self.running:
            self.running.remove(proc)
        if proc.poll() is None or group_members(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        # Wait for the whole group: children (uvicorn under mlflow) may outlive the leader.
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not group_members(proc.pid):
                return
            time.sleep(0.1)
        left = group_members(proc.pid)
        if left:  # only while members remain can the group id not belong to someone else
            log(f"process group {proc.pid} ignored SIGTERM for {grace_s:.0f} s: SIGKILL {left}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc, grace_s=10.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, *, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_until(
    proc: subprocess.Popen[bytes], url: str, log_file: Path, *, timeout_s: float, what: str
) -> float:
    """Seconds until ``url`` answers 200; an error with the server's log tail otherwise."""
    started = time.perf_counter()
    last: Any = None
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before it was ready; log tail:\n"
                + tail(log_file)
            )
        try:
            status, last = http("GET", url, timeout=2.0)
            if status == 200:
                return time.perf_counter() - started
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.5)
    raise RuntimeError(
        f"{what} not ready after {timeout_s:.0f} s (last answer: {last!r}); log tail:\n"
        + tail(log_file)
    )


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children so far (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """CPU of one thread; the main thread (tid == pid) runs the gateway's event loop."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), steal included."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU of this process and of its reaped children (wrk runs)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuWatch:
    """How many cores processes other than ours (and our servers) used meanwhile: noise."""

    def __init__(self, *pgids: int) -> None:
        self.pgids = pgids
        self.wall = time.perf_counter()
        self.busy = _machine_busy_seconds()
        self.own = _own_seconds() + sum(group_cpu_seconds(g) for g in pgids)

    def other_cores(self) -> float:
        wall = time.perf_counter() - self.wall
        busy = _machine_busy_seconds() - self.busy
        own = _own_seconds() + sum(group_cpu_seconds(g) for g in self.pgids) - self.own
        return max(0.0, (busy - own) / wall) if wall > 0 else float("nan")


def _proc_stats() -> list[tuple[int, list[str]]]:
    """(pid, fields after the command name) of every process in /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found.append((int(entry.name), fields))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    return [pid for pid, f in _proc_stats() if int(f[2]) == pgid and f[0] != "Z"]


def group_cpu_seconds(pgid: int) -> float:
    """CPU of every live process in a process group (mlflow serve runs uvicorn as a child)."""
    ticks = sum(int(f[11]) + int(f[12]) for _, f in _proc_stats() if int(f[2]) == pgid)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- data --


def test_texts(folder: Path) -> list[str]:
    import pandas as pd

    texts = [str(t) for t in pd.read_csv(folder / "test.csv")["text"].tolist()]
    # The file is ordered by label; shuffle once so that every consumer sees mixed traffic.
    random.Random(SEED).shuffle(texts)
    return texts


def write_bodies(
    path: Path, texts: list[str], *, per_request: int, paths: list[str], make: Any
) -> int:
    """One request per line ("path<TAB>json"); paths are drawn at random (fixed seed)."""
    rng = random.Random(SEED + per_request + len(paths))
    lines = []
    for start in range(0, len(texts) - per_request + 1, per_request):
        chunk = texts[start : start + per_request]
        body = json.dumps(make(chunk), ensure_ascii=True)
        lines.append(f"{rng.choice(paths)}\t{body}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def gateway_body(chunk: list[str]) -> dict[str, Any]:
    return {"texts": chunk}


def mlflow_body(chunk: list[str]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["text"], "data": [[t] for t in chunk]}}


# -- setup: one quick adapter, registered under every name --


@dataclass
class Setup:
    home: Path
    specialists_file: Path
    tracking_uri: str
    train_seconds: float
    register_seconds: float
    train_rows: int
    val_accuracy: float
    #: The registered adapter's out-of-scope detector, as ``describe()`` gives it.
    detector: dict[str, Any]
    pyfunc_uri: str = ""


def setup(tmp: Path, data: Path, *, train_rows: int, names: list[str]) -> Setup:
    """Train one adapter and register it under ``names`` (with a challenger for SHADOWED);
    an error if the registered adapter lacks the out-of-scope detector part 6 measures."""
    import yaml

    from lifecycle.data import load_table
    from lifecycle.ood import OOD_FILE
    from lifecycle.registry import CHALLENGER, CHAMPION, Registry
    from lifecycle.settings import Settings
    from lifecycle.spec import SpecialistSpec, TrainingSpec
    from lifecycle.train import train_specialist

    home = tmp / "home"
    train = load_table(data / "train.csv", label_column="category")
    per_label = max(2, math.ceil(train_rows / train["label"].nunique()))
    smallest = int(train["label"].value_counts().min())
    subset = (
        train.groupby("label")
        .sample(n=min(per_label, smallest), random_state=SEED)
        .reset_index(drop=True)
    )
    spec = SpecialistSpec(
        name=SOLO,
        training=TrainingSpec(
            epochs=1, evals_per_epoch=1, validation_fraction=0.1, max_length=64, batch_size=32
        ),
    )
    log(f"setup: training one adapter, 1 epoch on {len(subset)} Banking77 rows")
    started = time.perf_counter()
    result = train_specialist(spec, subset, progress=False)
    train_seconds = time.perf_counter() - started
    log(
        f"setup: trained in {train_seconds:.1f} s "
        f"(val accuracy {result.evaluation.accuracy:.3f}); registering"
    )

    started = time.perf_counter()
    registry = Registry(Settings(home=home))
    for name in names:
        info = registry.log_training(
            spec.model_copy(update={"name": name}), result, trigger="manual"
        )
        registry.set_alias(name, CHAMPION, info.version)
    if SHADOWED in names:
        # A second version of the shadowed specialist, same weights, as its challenger.
        info = registry.log_training(
            spec.model_copy(update={"name": SHADOWED}), result, trigger="manual", parent_version=1
        )
        registry.set_alias(SHADOWED, CHALLENGER, info.version)
    register_seconds = time.perf_counter() - started
    # Training fits the detector; the gateway loads it from the registered folder. Without it
    # every ood_score is None and "score on" would measure nothing.
    _, folder = registry.download(SOLO, "champion")
    if not (folder / OOD_FILE).is_file():
        raise RuntimeError(f"the registered adapter {folder} has no {OOD_FILE}")
    detector = result.host.detector(result.adapter_id).describe()

    specialists_file = tmp / "specialists.yaml"
    entries = [
        {
            "name": name,
            "base_model": "minilm",
            "training": {"max_length": 64},
            "escalation": {"confidence_threshold": 0.0, "fallback": "none"},
            "promotion": {"shadow_sample_rate": 1.0},
        }
        for name in names
    ]
    specialists_file.write_text(yaml.safe_dump({"specialists": entries}, sort_keys=False))
    versions = len(names) + int(SHADOWED in names)
    log(
        f"setup: registered {versions} versions in {register_seconds:.1f} s; detector "
        f"{detector.get('method')} in {folder / OOD_FILE}"
    )
    return Setup(
        home=home,
        specialists_file=specialists_file,
        tracking_uri=registry.settings.tracking_uri,
        train_seconds=train_seconds,
        register_seconds=register_seconds,
        train_rows=len(subset),
        val_accuracy=float(result.evaluation.accuracy),
        detector=detector,
    )


# -- 1. the limit --


def measure_limit(st: Setup, texts: list[str], *, quick: bool) -> dict[str, Any]:
    """Sequences/s of the raw forward in this process, on the adapter the gateway serves."""
    from lifecycle.model import AdapterHost
    from lifecycle.registry import Registry
    from lifecycle.settings import Settings

    global _HOST
    registry = Registry(Settings(home=st.home))
    host = AdapterHost("minilm")
    adapter_id, _ = registry.load(host, SOLO, "champion")
    _HOST = (host, adapter_id)
    sample = texts[:1000] if quick else texts
    host.logits_and_embeddings(sample[:256], adapter_id, batch_size=32)  # warm-up

    out: dict[str, Any] = {"texts": len(sample), "sorted": {}, "other_cpu_cores": {}}

    def step(key: str, fn: Any, n: int, what: str) -> float:
        watch = CpuWatch()
        started = time.perf_counter()
        fn()
        value = n / (time.perf_counter() - started)
        other = out["other_cpu_cores"][key] = watch.other_cores()
        noisy = f"  (other processes used {other:.2f} cores: noisy)" if other > NOISY else ""
        log(f"limit: {what}: {value:.0f} seq/s{noisy}")
        return value

    for bs in (8, 16, 32, 64):
        out["sorted"][str(bs)] = step(
            f"sorted_{bs}",
            lambda bs=bs: host.logits_and_embeddings(sample, adapter_id, batch_size=bs),
            len(sample),
            f"sorted by length, batch {bs}{' (packed)' if host.packing else ''}",
        )
    # The plain padded forward, sorted by length: the limit as the issue first stated it.
    # The limit is the best of every way tried, so the gateway is never credited with a
    # forward the limit did not use.
    out["packing"] = host.packing
    out["sorted_padded"] = {}
    packing, host.packing = host.packing, False
    try:
        for bs in (32, 64):
            out["sorted_padded"][str(bs)] = step(
                f"sorted_padded_{bs}",
                lambda bs=bs: host.logits_and_embeddings(sample, adapter_id, batch_size=bs),
                len(sample),
                f"sorted by length, batch {bs}, padded",
            )
    finally:
        host.packing = packing
    best_bs = max(out["sorted"], key=lambda k: out["sorted"][k])
    out["best_batch_size"] = int(best_bs)
    out["one_worker_best"] = max(*out["sorted"].values(), *out["sorted_padded"].values())
    best_padded = max(out["sorted_padded"], key=lambda k: out["sorted_padded"][k])
    if out["sorted_padded"][best_padded] > out["sorted"][best_bs]:
        best_config = ("one", int(best_padded), False)
    else:
        best_config = ("one", int(best_bs), host.packing)
    # The gateway may run two model workers (a copy of the model each, one torch thread
    # each): the limit is the better of the two ways to spend the cores, so that the
    # ratios below never credit the gateway with a configuration the limit did not try.
    out["two_workers"] = step(
        "two_workers",
        lambda: _two_workers(st, sample, int(best_bs)),
        len(sample),
        f"two model workers, one thread each, sorted, batch {best_bs}",
    )
    out["best"] = max(out["one_worker_best"], out["two_workers"])
    if out["two_workers"] > out["one_worker_best"]:
        best_config = ("two", int(best_bs), host.packing)
    workers, batch, packed = best_config
    out["best_config"] = {"workers": workers, "batch": batch, "packed": packed}
    # The full predict() (Prediction objects, embedding and probabilities as lists): what
    # the gateway's model thread runs per batch.
    out["predict_sorted_best"] = step(
        "predict_sorted_best",
        lambda: host.predict(sample, adapter_id, batch_size=int(best_bs)),
        len(sample),
        f"predict() sorted, batch {best_bs}",
    )

    def batches(size: int, sub: int, subset: list[str]) -> None:
        # One call per batch of ``size`` in arrival order; the call sorts its texts by
        # length and runs forwards of ``sub`` (sub == size: one padded forward).
        for start in range(0, len(subset), size):
            host.logits_and_embeddings(subset[start : start + size], adapter_id, batch_size=sub)

    out["unsorted_8"] = step(
        "unsorted_8", lambda: batches(8, 8, sample), len(sample), "unsorted, batch 8"
    )
    # What the gateway's model thread gets: micro-batches of up to 32 texts in arrival
    # order, run as one padded forward (the engine passes batch_size=max_batch_size) ...
    out["unsorted_32"] = step(
        "unsorted_32",
        lambda: batches(32, 32, sample),
        len(sample),
        "unsorted, batch 32 (a full gateway micro-batch)",
    )
    # ... or sorted within the micro-batch and split into shorter forwards (less padding).
    for sub in (16, 8):
        out[f"micro_32_sorted_split_{sub}"] = step(
            f"micro_32_sorted_split_{sub}",
            lambda sub=sub: batches(32, sub, sample),
            len(sample),
            f"micro-batches of 32 sorted within, forwards of {sub}",
        )
    # The same texts go through the gateway and the pyfunc: their labels must agree.
    out["labels"] = [p.label for p in host.predict(texts[:CHECK_TEXTS], adapter_id)]
    ones = sample[:200] if quick else sample[:1000]
    out["batch_1_texts"] = len(ones)
    out["batch_1"] = step(
        "batch_1", lambda: batches(1, 1, ones), len(ones), f"batch of one ({len(ones)} texts)"
    )
    return out


def limit_again(st: Setup, texts: list[str], limit: dict[str, Any]) -> float:
    """The limit's best way, measured once more: the figure a paired round divides by."""
    config = limit["best_config"]
    sample = texts[: limit["texts"]]
    watch = CpuWatch()
    started = time.perf_counter()
    if config["workers"] == "two":
        _two_workers(st, sample, config["batch"])
    else:
        assert _HOST is not None, "measure_limit first"
        host, adapter_id = _HOST
        packing, host.packing = host.packing, bool(config["packed"] and host.packing)
        try:
            host.logits_and_embeddings(sample, adapter_id, batch_size=config["batch"])
        finally:
            host.packing = packing
    value = len(sample) / (time.perf_counter() - started)
    other = watch.other_cores()
    noisy = f"  (other processes used {other:.2f} cores: noisy)" if other > NOISY else ""
    how = f"{config['workers']} worker(s), batch {config['batch']}"
    log(f"limit again ({how}): {value:.0f} seq/s{noisy}")
    return value


_HOST: tuple[Any, str] | None = None


def _two_workers(st: Setup, texts: list[str], batch_size: int) -> None:
    """Sorted batches dealt out to two hosts, each on its own thread with one torch thread."""
    import threading

    import torch

    from lifecycle.model import AdapterHost
    from lifecycle.registry import Registry
    from lifecycle.settings import Settings

    global _HOSTS
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if _HOSTS is None:
            registry = Registry(Settings(home=st.home))
            _HOSTS = []
            for _ in range(2):
                host = AdapterHost("minilm")
                adapter_id, _ = registry.load(host, SOLO, "champion")
                host.logits_and_embeddings(texts[:64], adapter_id, batch_size=batch_size)
                _HOSTS.append((host, adapter_id))
        ordered = sorted(texts, key=len)
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]

        def run(k: int) -> None:
            host, adapter_id = _HOSTS[k]
            for batch in batches[k::2]:
                host.logits_and_embeddings(batch, adapter_id, batch_size=batch_size)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(before)


_HOSTS: list[tuple[Any, str]] | None = None


# -- load generation --


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"cannot read a duration from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", output, re.M)
        if match:
            result[f"p{pct}_ms"] = _ms(match.group(1))
    match = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    if match:
        result["requests"] = int(match.group(1))
        result["seconds"] = _ms(match.group(2)) / 1000.0
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match:
        result["requests_per_s"] = float(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    result["socket_errors"] = sum(int(g) for g in match.groups()) if match else 0
    if "requests_per_s" not in result or "p50_ms" not in result:
        raise RuntimeError(f"cannot parse wrk's output:\n{output}")
    return result


class LoadGenerator:
    """wrk with bench/_load.lua, or the Python fallback; closed loop, keep-alive connections."""

    def __init__(self, preference: str) -> None:
        wrk = shutil.which("wrk")
        if preference == "wrk" and not wrk:
            raise SystemExit("--generator wrk, but wrk is not on PATH (apt-get install wrk)")
        self.kind = "wrk" if wrk and preference != "python" else "python"
        self.wrk = wrk
        self.description = (
            f"wrk ({_wrk_version(wrk)}), 1 thread, bench/_load.lua"
            if self.kind == "wrk"
            else "python asyncio + httpx, one AsyncClient, fixed keep-alive connections"
        )

    def run(
        self,
        base_url: str,
        bodies: Path,
        *,
        connections: int,
        seconds: float,
        think_ms: float = 0.0,
    ) -> dict[str, Any]:
        if self.kind == "wrk":
            args = [
                str(self.wrk),
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                str(LUA),
                base_url,
                "--",
                str(bodies),
            ]
            if think_ms > 0:
                args.append(f"{think_ms:.3f}")
            done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
            return parse_wrk(done.stdout)
        return asyncio.run(
            _python_load(
                base_url, bodies, connections=connections, seconds=seconds, think_ms=think_ms
            )
        )


def _wrk_version(wrk: str | None) -> str:
    if not wrk:
        return "absent"
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return (
        (done.stdout or done.stderr).splitlines()[0].strip()
        if (done.stdout or done.stderr)
        else "?"
    )


async def _python_load(
    base_url: str, bodies: Path, *, connections: int, seconds: float, think_ms: float
) -> dict[str, Any]:
    import httpx

    requests = []
    for line in bodies.read_text(encoding="utf-8").splitlines():
        path, _, body = line.partition("\t")
        requests.append((path, body.encode()))
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:
        started = time.perf_counter()
        stop = started + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            rng = random.Random(SEED + k)
            i = rng.randrange(len(requests))
            while time.perf_counter() < stop:
                path, body = requests[i % len(requests)]
                i += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=headers)
                    ok = response.status_code < 300
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                else:
                    errors += 1
                if think_ms > 0:
                    await asyncio.sleep(rng.expovariate(1000.0 / think_ms))  # mean think_ms

        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p / 100.0 * len(latencies)))]
            if latencies
            else float("nan")
        )

    return {
        "p50_ms": pct(50),
        "p75_ms": pct(75),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "requests": len(latencies) + errors,
        "seconds": elapsed,
        "requests_per_s": (len(latencies) + errors) / elapsed,
        "non_2xx": errors,
        "socket_errors": 0,
    }


# -- servers --


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIFECYCLE_")
        and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_file: Path
    ready_seconds: float
    metrics: bool
    #: A small request (path, body): answered only once the backlog ahead of it is done.
    probe: tuple[str, Any] = ("", None)


def start_gateway(
    procs: Processes, st: Setup, tmp: Path, *, label: str, extra: dict[str, str] | None = None
) -> Server:
    port = free_port()
    env = base_env(
        {
            "LIFECYCLE_HOME": str(st.home),
            "LIFECYCLE_ADMIN_TOKEN": TOKEN,
            "LIFECYCLE_PORT": str(port),
            "LIFECYCLE_HOST": "127.0.0.1",
            "LIFECYCLE_SPECIALISTS_FILE": str(st.specialists_file),
            "LIFECYCLE_REGISTRY_POLL_S": "0",
            "LIFECYCLE_PROGRESS": "false",
            **(extra or {}),
        }
    )
    exe = BIN / "lifecycle"
    args = [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "lifecycle.cli", "serve"]
    log_file = tmp / f"{label}.log"
    proc = procs.start(args, env=env, log_file=log_file, cwd=tmp)
    base_url = f"http://127.0.0.1:{port}"
    ready = wait_until(proc, f"{base_url}/readyz", log_file, timeout_s=240, what=f"gateway {label}")
    log(f"{label}: ready in {ready:.1f} s at {base_url} (log {log_file})")
    probe = (f"/v1/specialists/{SOLO}/predict", gateway_body(["probe"]))
    return Server(label, proc, base_url, log_file, ready, metrics=True, probe=probe)


def check_gateway(server: Server, name: str, texts: list[str]) -> list[str]:
    """The labels the gateway gives ``texts``; an error if the answer is malformed."""
    status, body = http(
        "POST", f"{server.base_url}/v1/specialists/{name}/predict", {"texts": texts}
    )
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"gateway {name} answered {status}: {str(body)[:500]}")
    if not all("label" in p and "confidence" in p for p in preds):
        raise RuntimeError(f"gateway {name}: predictions lack label/confidence: {preds[:1]}")
    return [str(p["label"]) for p in preds]


def scrape(server: Server) -> dict[str, float]:
    """Sums of the gateway's Prometheus series we use (summed over their labels)."""
    if not server.metrics:
        return {}
    try:
        status, text = http("GET", f"{server.base_url}/metrics", timeout=10.0)
    except OSError:
        return {}
    if status != 200 or not isinstance(text, str):
        return {}
    wanted = (
        "lifecycle_batch_size_sum",
        "lifecycle_batch_size_count",
        "lifecycle_batch_seconds_sum",
        "lifecycle_requests_total",
        "lifecycle_texts_total",
        "lifecycle_shadow_predictions_total",
        "lifecycle_shadow_dropped_total",
        "lifecycle_request_latency_seconds_sum",
        "lifecycle_request_latency_seconds_count",
        "lifecycle_queue_depth",
        "lifecycle_traffic_store_pending",
    )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name in wanted:
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class Point:
    target: str
    texts_per_request: int
    connections: int
    think_ms: float = 0.0


def drain(server: Server, *, timeout_s: float = 120.0) -> float:
    """Wait until the work a previous run left behind is done; returns the seconds it took.

    A load generator stops with requests in flight (up to connections x texts per
    request); the server still runs them, which would slow the start of the next point.
    """
    started = time.perf_counter()
    path, body = server.probe
    if path:
        http("POST", f"{server.base_url}{path}", body, timeout=timeout_s)
    while server.metrics and time.perf_counter() - started < timeout_s:
        m = scrape(server)
        if (
            m.get("lifecycle_queue_depth", 0.0) == 0
            and m.get("lifecycle_traffic_store_pending", 0.0) == 0
        ):
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def measure(
    gen: LoadGenerator, server: Server, bodies: Path, point: Point, *, seconds: float
) -> dict[str, Any]:
    drained = drain(server)
    pid = server.proc.pid
    before = scrape(server)
    loop0 = thread_cpu_seconds(pid, pid)
    watch = CpuWatch(pid)
    cpu0, wall0 = group_cpu_seconds(pid), time.perf_counter()
    result = gen.run(
        server.base_url,
        bodies,
        connections=point.connections,
        seconds=seconds,
        think_ms=point.think_ms,
    )
    wall = time.perf_counter() - wall0
    cpu = group_cpu_seconds(pid) - cpu0
    loop = thread_cpu_seconds(pid, pid) - loop0
    other = watch.other_cores()
    after = scrape(server)
    done = result["requests"]
    result.update(
        target=point.target,
        server=server.name,
        texts_per_request=point.texts_per_request,
        connections=point.connections,
        think_ms=point.think_ms,
        texts_per_s=result["requests_per_s"] * point.texts_per_request,
        server_cpu_cores=cpu / wall if wall > 0 else float("nan"),
        server_cpu_ms_per_request=1000 * cpu / done if done else float("nan"),
        other_cpu_cores=other,
        drain_seconds_before=drained,
    )
    if before and after:
        d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        batches = d.get("lifecycle_batch_size_count", 0.0)
        reqs = d.get("lifecycle_request_latency_seconds_count", 0.0)
        model_s = d.get("lifecycle_batch_seconds_sum", 0.0)
        in_app_s = d.get("lifecycle_request_latency_seconds_sum", 0.0)
        result["gateway"] = {
            "requests": reqs,
            "batches": batches,
            "mean_batch_texts": d.get("lifecycle_batch_size_sum", 0.0) / batches
            if batches
            else 0.0,
            # Share of wall time the model thread spent on batches (incl. the hand-off to it).
            "model_busy": model_s / wall,
            "model_ms_per_batch": 1000 * model_s / batches if batches else 0.0,
            # Request in to answer out, as the app measures it (excludes HTTP parsing/writing).
            "in_app_ms_per_request": 1000 * in_app_s / reqs if reqs else 0.0,
            # CPU of the main thread (uvicorn's event loop: HTTP, FastAPI, pydantic, JSON,
            # traffic records) per request: the gateway's per-request overhead, which competes
            # with torch's threads for the same cores.
            "loop_cpu_ms_per_request": 1000 * loop / reqs if reqs else 0.0,
            "loop_cpu_cores": loop / wall,
            "shadow_texts": d.get("lifecycle_shadow_predictions_total", 0.0),
            "shadow_dropped": d.get("lifecycle_shadow_dropped_total", 0.0),
        }
    errors = result["non_2xx"] + result["socket_errors"]
    extra = ""
    if "gateway" in result:
        g = result["gateway"]
        extra = (
            f" | batch {g['mean_batch_texts']:.1f} texts, model busy {g['model_busy']:.0%},"
            f" {g['model_ms_per_batch']:.1f} ms/batch, loop cpu"
            f" {g['loop_cpu_ms_per_request']:.2f} ms/req ({g['loop_cpu_cores']:.2f} cores)"
        )
    log(
        f"  {point.target:<24} {point.texts_per_request:>2} text/req c={point.connections:<3}"
        f"{f' think {point.think_ms:.0f} ms' if point.think_ms else ''}: "
        f"{result['texts_per_s']:7.1f} texts/s {result['requests_per_s']:7.1f} req/s "
        f"p50 {result['p50_ms']:7.1f} ms p99 {result['p99_ms']:7.1f} ms"
        f" cpu {result['server_cpu_cores']:.2f} cores"
        f" ({result['server_cpu_ms_per_request']:.1f} ms/req){extra}"
        + (f" ERRORS {errors}" if errors else "")
        + (f" NOISY: other processes used {other:.2f} cores" if other > NOISY else "")
    )
    return result


def warm(gen: LoadGenerator, server: Server, bodies: Path, seconds: float) -> None:
    gen.run(server.base_url, bodies, connections=16, seconds=seconds)


# -- 3. mlflow models serve --


def log_pyfunc(st: Setup) -> str:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from lifecycle.registry import Registry
    from lifecycle.settings import Settings

    registry = Registry(Settings(home=st.home))
    _, folder = registry.download(SOLO, "champion")
    experiment = registry.experiment_id("bench-pyfunc", kind="pyfunc")
    signature = infer_signature(
        pd.DataFrame({"text": ["a text"]}), pd.DataFrame({"label": ["x"], "confidence": [0.5]})
    )
    with (
        mlflow.start_run(experiment_id=experiment, run_name="bench-pyfunc"),
        warnings.catch_warnings(),
    ):
        # MLflow nags for type hints on predict(); the signature below does their job.
        warnings.filterwarnings("ignore", message=".*type hints.*")
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = mlflow.pyfunc.log_model(
            name="specialist",
            python_model=str(PYFUNC),
            artifacts={"specialist": str(folder)},
            signature=signature,
            registered_model_name="bench-pyfunc",
        )
    version = info.registered_model_version
    return f"models:/bench-pyfunc/{version}"


def start_mlflow(procs: Processes, st: Setup, tmp: Path) -> Server:
    port = free_port()
    env = base_env({"MLFLOW_TRACKING_URI": st.tracking_uri, "MLFLOW_REGISTRY_URI": st.tracking_uri})
    args = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        st.pyfunc_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log_file = tmp / "mlflow-serve.log"
    proc = procs.start(args, env=env, log_file=log_file, cwd=tmp)
    base_url = f"http://127.0.0.1:{port}"
    ready = wait_until(
        proc, f"{base_url}/ping", log_file, timeout_s=240, what="mlflow models serve"
    )
    log(f"mlflow models serve: ready in {ready:.1f} s at {base_url}")
    probe = ("/invocations", mlflow_body(["probe"]))
    return Server("mlflow", proc, base_url, log_file, ready, metrics=False, probe=probe)


def check_mlflow(server: Server, texts: list[str]) -> list[str]:
    """The labels the pyfunc gives ``texts``; an error if the answer is malformed."""
    status, body = http("POST", f"{server.base_url}/invocations", mlflow_body(texts))
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"mlflow models serve answered {status}: {str(body)[:500]}")
    if not all(isinstance(p, dict) and "label" in p for p in preds):
        raise RuntimeError(f"mlflow models serve: predictions lack a label: {preds[:1]}")
    return [str(p["label"]) for p in preds]


# -- 6. the out-of-scope score, on vs off --

#: The setting part 6 switches; everything else is the gateway's default on both sides.
OOD_ENV = "LIFECYCLE_OOD_SCORES"


def check_ood(server: Server, texts: list[str], *, scored: bool) -> list[str]:
    """The labels SOLO gives ``texts``, after checking every answer's score: a finite float
    ``ood_score`` and a bool ``out_of_scope`` from a gateway that scores, None for both from
    one that does not. A throughput figure counts only if the answers are what it claims."""
    status, body = http(
        "POST", f"{server.base_url}/v1/specialists/{SOLO}/predict", {"texts": texts}
    )
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"{server.name} answered {status}: {str(body)[:500]}")
    for pred in preds:
        score, flagged = pred.get("ood_score"), pred.get("out_of_scope")
        if scored:
            ok = isinstance(score, float) and math.isfinite(score) and isinstance(flagged, bool)
        else:
            ok = score is None and flagged is None
        if not ok:
            raise RuntimeError(
                f"{server.name} ({OOD_ENV}={str(scored).lower()}) answered ood_score={score!r},"
                f" out_of_scope={flagged!r}"
            )
    return [str(p["label"]) for p in preds]


def measure_ood(
    gen: LoadGenerator,
    procs: Processes,
    st: Setup,
    tmp: Path,
    texts: list[str],
    bodies: dict[int, Path],
    *,
    rounds: int,
    seconds: float,
    warm_s: float,
) -> dict[str, Any]:
    """Texts/s of SOLO with the out-of-scope score on and off, in paired rounds.

    Both gateways stay up for the whole part, so that a round's two figures are taken one
    right after the other; which side goes first alternates between rounds, so that the
    machine's drift within a round favours neither. ``bodies`` maps texts per request to
    the request file of that size.
    """
    servers = {
        scored: start_gateway(
            procs,
            st,
            tmp,
            label=f"gateway-ood-{'on' if scored else 'off'}",
            extra={OOD_ENV: str(scored).lower()},
        )
        for scored in (True, False)
    }
    check = texts[:CHECK_TEXTS]
    labels = {scored: check_ood(server, check, scored=scored) for scored, server in servers.items()}
    if labels[True] != labels[False]:
        log(f"WARNING: labels differ with the score on and off: {labels}")
    for server in servers.values():
        warm(gen, server, bodies[1], warm_s)
    log(
        f"out-of-scope score on vs off ({rounds} rounds): "
        + ", ".join(f"{n} text(s)/request" for n in bodies)
        + ", c=16"
    )
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        row: dict[str, Any] = {"round": r, "first": "on" if r % 2 else "off"}
        order = (True, False) if r % 2 else (False, True)
        for per_request, requests in bodies.items():
            for scored in order:
                side = "on" if scored else "off"
                point = Point(f"gateway-ood-{side} r{r}", per_request, 16)
                measured = measure(gen, servers[scored], requests, point, seconds=seconds)
                points.append(measured)
                row[f"{side}_{per_request}"] = measured["texts_per_s"]
                row[f"{side}_{per_request}_errors"] = (
                    measured["non_2xx"] + measured["socket_errors"]
                )
        rows.append(row)
    # The answers again, on other texts, once the load is over.
    after = texts[CHECK_TEXTS : 2 * CHECK_TEXTS]
    for scored, server in servers.items():
        check_ood(server, after, scored=scored)
        procs.stop(server.proc)
    return {
        "setting": OOD_ENV,
        "connections": 16,
        "texts_per_request": list(bodies),
        "detector": st.detector,
        "answers_checked": 2 * CHECK_TEXTS,
        "same_labels": labels[True] == labels[False],
        "rounds": rows,
        "points": points,
    }


# -- the run --


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def run(args: argparse.Namespace, results: dict[str, Any], procs: Processes, tmp: Path) -> None:
    quick = args.quick
    dur = args.duration or (4.0 if quick else 12.0)
    warm_s = 2.0 if quick else 4.0
    texts = test_texts(args.data)
    results["texts"] = {"source": str(args.data / "test.csv"), "n": len(texts)}
    gen = LoadGenerator(args.generator)
    results["load_generator"] = gen.description
    log(f"load generator: {gen.description}")

    # Part 6 alone serves one specialist: registering and loading nine more is wasted time.
    names = [SOLO] if args.only == "ood" else [*MIX, SHADOWED]
    st = setup(tmp, args.data, train_rows=args.train_rows, names=names)
    results["setup"] = {
        "train_rows": st.train_rows,
        "train_seconds": st.train_seconds,
        "register_seconds": st.register_seconds,
        "val_accuracy": st.val_accuracy,
        "specialists": names,
        "detector": st.detector,
    }
    rounds = args.rounds or (1 if quick else 3)

    bodies = tmp / "bodies"
    bodies.mkdir()
    one = bodies / "solo-1.txt"
    sixteen = bodies / "solo-16.txt"
    mixed = bodies / "mixed-1.txt"
    shadowed = bodies / "shadowed-1.txt"
    path = lambda n: f"/v1/specialists/{n}/predict"  # noqa: E731
    write_bodies(one, texts, per_request=1, paths=[path(SOLO)], make=gateway_body)
    write_bodies(sixteen, texts, per_request=16, paths=[path(SOLO)], make=gateway_body)
    write_bodies(mixed, texts, per_request=1, paths=[path(n) for n in MIX], make=gateway_body)
    write_bodies(shadowed, texts, per_request=1, paths=[path(SHADOWED)], make=gateway_body)

    points: list[dict[str, Any]] = []
    results["points"] = points

    def out_of_scope_part() -> None:
        ood = measure_ood(
            gen,
            procs,
            st,
            tmp,
            texts,
            {16: sixteen, 1: one},
            rounds=rounds,
            seconds=dur,
            warm_s=warm_s,
        )
        points.extend(ood.pop("points"))
        results["ood"] = ood

    if args.only == "ood":
        out_of_scope_part()
        return

    limit = measure_limit(st, texts, quick=quick)
    results["limit"] = limit

    # -- 3a. mlflow models serve, started now so that it runs beside the gateway -------------
    log("mlflow models serve: logging the adapter as a models-from-code pyfunc")
    started = time.perf_counter()
    st.pyfunc_uri = log_pyfunc(st)
    results["mlflow"] = {"model_uri": st.pyfunc_uri, "log_seconds": time.perf_counter() - started}
    ml = start_mlflow(procs, st, tmp)
    results["mlflow"]["ready_seconds"] = ml.ready_seconds
    labels = check_mlflow(ml, texts[:CHECK_TEXTS])
    if labels != limit["labels"]:
        log(f"WARNING: mlflow pyfunc labels differ from the in-process model: {labels}")
    results.setdefault("consistency", {})["mlflow pyfunc"] = labels == limit["labels"]
    ml_one = bodies / "mlflow-1.txt"
    write_bodies(ml_one, texts, per_request=1, paths=["/invocations"], make=mlflow_body)
    warm(gen, ml, ml_one, warm_s)

    # -- 2, 4, 5: the gateway, with its defaults --------------------------------------------
    from lifecycle.settings import Settings

    # The servers get a clean environment (no LIFECYCLE_* of ours): the defaults apply.
    fields = Settings.model_fields
    results["gateway_settings"] = {
        **{
            name: fields[name].default
            for name in (
                "max_batch_size",
                "forward_batch_size",
                "max_wait_ms",
                "shadow_batch_size",
                "store_text",
                "model_workers",
                "shadow_worker",
            )
            if name in fields
        },
        "torch_threads": fields["torch_threads"].default or "all cores",
        "specialists": len(MIX) + 1,
        "adapters": len(MIX) + 2,
    }
    log("gateway: starting `lifecycle serve` with 9 specialists (10 adapters)")
    gw = start_gateway(procs, st, tmp, label="gateway")
    results["gateway_ready_seconds"] = gw.ready_seconds
    for name in (*MIX, SHADOWED):
        labels = check_gateway(gw, name, texts[:CHECK_TEXTS])
        if labels != limit["labels"]:
            log(f"WARNING: gateway {name} labels differ from the in-process model: {labels}")
        results.setdefault("consistency", {})[f"gateway {name}"] = labels == limit["labels"]
    warm(gen, gw, one, warm_s)
    conc_1 = [1, 4, 16, 64] if not quick else [1, 16, 64]
    conc_16 = [1, 4, 16] if not quick else [4, 16]
    log("gateway: one sweep over concurrencies")
    for c in conc_1:
        points.append(measure(gen, gw, one, Point("gateway", 1, c), seconds=dur))
    for c in conc_16:
        points.append(measure(gen, gw, sixteen, Point("gateway", 16, c), seconds=dur))

    def best_c(per_request: int) -> int:
        found = [p for p in points if p["target"] == "gateway"]
        found = [p for p in found if p["texts_per_request"] == per_request]
        return int(max(found, key=lambda p: p["texts_per_s"])["connections"])

    # Each floor divides two figures measured within a minute of each other, in rounds; the
    # verdict is the median of the rounds' ratios. The machine's speed drifts by more than
    # the floors' margins over a run, which a single pair taken minutes apart would report.
    c16, c1 = best_c(16), best_c(1)
    log(
        f"paired rounds ({rounds}): limit again, gateway 16 texts/request c={c16},"
        f" 1 text/request c={c1} and c=16, mlflow models serve c=16"
    )
    paired: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        row: dict[str, Any] = {"round": r, "limit": limit_again(st, texts, limit)}
        row.update(c16=c16, c1=c1)
        for key, server, requests, point in (
            ("sixteen", gw, sixteen, Point(f"gateway r{r}", 16, c16)),
            ("one", gw, one, Point(f"gateway r{r}", 1, c1)),
            ("one_c16", gw, one, Point(f"gateway r{r}", 1, 16)),
            ("mlflow_c16", ml, ml_one, Point(f"mlflow-models-serve r{r}", 1, 16)),
        ):
            measured = measure(gen, server, requests, point, seconds=dur)
            points.append(measured)
            row[key] = measured["texts_per_s"]
        paired.append(row)
    results["paired"] = paired

    log(f"8 adapters mixed vs 1 adapter, 1 text/request, c=16 ({rounds} rounds, alternating)")
    singles, mixes = [], []
    for _ in range(rounds):
        singles.append(measure(gen, gw, one, Point("gateway-1-adapter", 1, 16), seconds=dur))
        mixes.append(measure(gen, gw, mixed, Point("gateway-8-adapters-mixed", 1, 16), seconds=dur))
    points += singles + mixes
    results["adapters"] = {
        "rounds": rounds,
        "one_texts_per_s": [p["texts_per_s"] for p in singles],
        "eight_mixed_texts_per_s": [p["texts_per_s"] for p in mixes],
        "one_p50_ms": [p["p50_ms"] for p in singles],
        "eight_mixed_p50_ms": [p["p50_ms"] for p in mixes],
    }

    log("shadow: capacity at c=16, then ~30% of it, champion p50 with shadow on vs off")
    same_load = [
        p
        for p in points
        if p["target"].startswith(("gateway r", "gateway-1-adapter"))
        and p["texts_per_request"] == 1
        and p["connections"] == 16
    ]
    # The median of the identical c=16 runs so far.
    capacity = statistics.median(p["requests_per_s"] for p in same_load)
    if not quick:
        points.append(
            measure(gen, gw, shadowed, Point("gateway-shadow-on-max", 1, 16), seconds=dur)
        )
    target_rps = 0.3 * capacity
    c_paced = 16
    c1_point = next(
        (
            p
            for p in points
            if p["target"] == "gateway" and p["texts_per_request"] == 1 and p["connections"] == 1
        ),
        None,
    )
    # Each connection waits an exponential think time after each answer: offered load is
    # connections / (think + latency); the latency at c=1 stands in for the latency here.
    cycle_ms = c_paced / target_rps * 1000.0
    latency_guess = c1_point["p50_ms"] if c1_point else 10.0
    think = max(1.0, cycle_ms - min(latency_guess, cycle_ms / 2))
    paced_s = args.duration or (4.0 if quick else 20.0)
    offs, ons = [], []
    for _ in range(rounds):
        offs.append(
            measure(
                gen, gw, one, Point("gateway-shadow-off-30%", 1, c_paced, think), seconds=paced_s
            )
        )
        ons.append(
            measure(
                gen,
                gw,
                shadowed,
                Point("gateway-shadow-on-30%", 1, c_paced, think),
                seconds=paced_s,
            )
        )
    points += offs + ons
    results["shadow"] = {
        "capacity_rps_c16": capacity,
        "target_rps": target_rps,
        "connections": c_paced,
        "think_ms": think,
        "rounds": rounds,
        "off_rps": [p["requests_per_s"] for p in offs],
        "on_rps": [p["requests_per_s"] for p in ons],
        "off_p50_ms": [p["p50_ms"] for p in offs],
        "on_p50_ms": [p["p50_ms"] for p in ons],
        "off_p99_ms": [p["p99_ms"] for p in offs],
        "on_p99_ms": [p["p99_ms"] for p in ons],
        "on_shadow_texts": sum(p.get("gateway", {}).get("shadow_texts", 0.0) for p in ons),
        "on_shadow_dropped": sum(p.get("gateway", {}).get("shadow_dropped", 0.0) for p in ons),
    }
    procs.stop(gw.proc)

    # -- 3b. mlflow models serve at lower concurrencies (informative) ------------------------
    for c in [1, 4] if not quick else [4]:
        points.append(measure(gen, ml, ml_one, Point("mlflow-models-serve", 1, c), seconds=dur))
    procs.stop(ml.proc)

    # -- 2b. the same gateway without batching --------------------------------------------------
    log("gateway without batching: LIFECYCLE_MAX_BATCH_SIZE=1")
    gw1 = start_gateway(
        procs, st, tmp, label="gateway-batch1", extra={"LIFECYCLE_MAX_BATCH_SIZE": "1"}
    )
    check_gateway(gw1, SOLO, texts[:1])
    warm(gen, gw1, one, warm_s)
    points.append(measure(gen, gw1, one, Point("gateway-batch-of-one", 1, 16), seconds=dur))
    procs.stop(gw1.proc)

    # -- 6. the out-of-scope score on vs off ----------------------------------------------------
    out_of_scope_part()


def median_ratio(tops: list[float], bottoms: list[float]) -> float | None:
    """The median of the per-round ratios of two figures measured side by side."""
    ratios = [r for a, b in zip(tops, bottoms, strict=True) if (r := ratio(a, b)) is not None]
    return statistics.median(ratios) if ratios else None


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    paired = results.get("paired", [])
    adapters = results.get("adapters", {})
    shadow = results.get("shadow", {})
    ood = results.get("ood", {}).get("rounds", [])

    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [row[key] for row in rows]

    def rounds(tops: list[float], bottoms: list[float], unit: str) -> str:
        pairs = zip(tops, bottoms, strict=True)
        return "; ".join(f"{a:.0f}/{b:.0f}" for a, b in pairs) + f" {unit}"

    def per_round(key: str, under: str, unit: str = "texts/s") -> tuple[float | None, str]:
        tops, bottoms = col(paired, key), col(paired, under)
        return median_ratio(tops, bottoms), rounds(tops, bottoms, unit)

    g16, g16_detail = per_round("sixteen", "limit")
    g1, g1_detail = per_round("one", "limit")
    ml, ml_detail = per_round("one_c16", "mlflow_c16")
    eight, one = adapters.get("eight_mixed_texts_per_s", []), adapters.get("one_texts_per_s", [])
    on, off = shadow.get("on_p50_ms", []), shadow.get("off_p50_ms", [])
    c16 = paired[0].get("c16", "") if paired else ""

    def ood_row(per_request: int) -> tuple[str, str, float | None, str, float, str]:
        scored, bare = col(ood, f"on_{per_request}"), col(ood, f"off_{per_request}")
        errors = sum(row[f"{side}_{per_request}_errors"] for row in ood for side in ("on", "off"))
        return (
            "ood",
            f"out-of-scope score on / off, {per_request} text{'s' * (per_request > 1)}/request,"
            " c=16",
            median_ratio(scored, bare),
            ">=",
            0.95,
            rounds(scored, bare, "texts/s") + (f" ERRORS {errors}" if errors else ""),
        )

    rows = [
        (
            "main",
            "gateway / limit, 16 texts/request, best concurrency",
            g16,
            ">=",
            0.75,
            g16_detail + (f" (c={c16})" if c16 else ""),
        ),
        ("main", "gateway / limit, 1 text/request, best concurrency", g1, ">=", 0.5, g1_detail),
        ("main", "gateway / mlflow models serve, 1 text/request, c=16", ml, ">=", 3.0, ml_detail),
        (
            "main",
            "8 adapters mixed / 1 adapter, 1 text/request, c=16",
            median_ratio(eight, one),
            ">=",
            0.8,
            rounds(eight, one, "texts/s"),
        ),
        (
            "main",
            "shadow on / off, champion p50 at ~30% load",
            median_ratio(on, off),
            "<=",
            1.10,
            "; ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(on, off, strict=True)) + " ms",
        ),
        ood_row(16),
        ood_row(1),
    ]
    out = []
    for part, name, value, op, floor, detail in rows:
        if results.get("only") and part != results["only"]:
            continue  # a part that was not asked for is not a failed one
        ok = None if value is None else (value >= floor if op == ">=" else value <= floor)
        out.append(
            {"check": name, "ratio": value, "op": op, "floor": floor, "pass": ok, "detail": detail}
        )
    return out


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print()
    print(
        f"machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"torch {m['torch']} with {m['torch_threads']} threads, "
        f"{m['cuda'] or 'no GPU'}; load average at start {m['load_average_at_start'][0]:.2f}"
    )
    mode = "QUICK (smoke run: short, noisy figures)" if results["quick"] else "full"
    if results.get("only"):
        mode += f", only part {results['only']}"
    print(f"mode: {mode}; load generator: {results.get('load_generator', '?')}")
    if results.get("gateway_settings"):
        print(
            "gateway defaults: "
            + ", ".join(f"{k} {v}" for k, v in results["gateway_settings"].items())
        )
    limit = results.get("limit")
    if limit:
        print(
            f"limit ({limit['texts']} texts, in process, seq/s): two workers "
            f"{limit.get('two_workers', 0):.0f}; one worker sorted by length "
            + ", ".join(f"b{k} {v:.0f}" for k, v in limit["sorted"].items())
            + f"; predict() b{limit['best_batch_size']} {limit['predict_sorted_best']:.0f}"
            + (" (forwards packed)" if limit.get("packing") else "")
        )
        if limit.get("sorted_padded"):
            print(
                "  padded, sorted by length: "
                + ", ".join(f"b{k} {v:.0f}" for k, v in limit["sorted_padded"].items())
                + f"; limit = best of all: {limit['best']:.0f} ({limit.get('best_config')})"
            )
        print(
            f"  unsorted b8 {limit['unsorted_8']:.0f}; unsorted b32 {limit['unsorted_32']:.0f};"
            f" b32 sorted within, forwards of 16 {limit['micro_32_sorted_split_16']:.0f}"
            f" / of 8 {limit['micro_32_sorted_split_8']:.0f};"
            f" batch of one {limit['batch_1']:.0f}"
        )
    print()
    print(
        f"{'target':<26}{'txt/req':>8}{'conc':>6}{'texts/s':>10}{'req/s':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'batch':>7}{'busy':>6}{'cpu':>6}{'loop':>6}{'other':>7}"
    )
    for p in results.get("points", []):
        g = p.get("gateway", {})
        errors = p["non_2xx"] + p["socket_errors"]
        print(
            f"{p['target']:<26}{p['texts_per_request']:>8}{p['connections']:>6}"
            f"{p['texts_per_s']:>10.1f}{p['requests_per_s']:>9.1f}"
            f"{p['p50_ms']:>9.1f}{p['p99_ms']:>9.1f}"
            f"{(format(g['mean_batch_texts'], '.1f') if g else '-'):>7}"
            f"{(format(g['model_busy'], '.0%') if g else '-'):>6}"
            f"{p['server_cpu_cores']:>6.2f}"
            f"{(format(g['loop_cpu_cores'], '.2f') if g else '-'):>6}"
            f"{p.get('other_cpu_cores', float('nan')):>7.2f}"
            + (f"  errors {errors}" if errors else "")
        )
    print(
        "batch: mean texts per model batch; busy: model thread's share of wall time; cpu: cores"
        " used by the server; loop: cores used by its event-loop thread; other: cores used by"
        " unrelated processes meanwhile (noise)"
    )
    consistency = results.get("consistency", {})
    if consistency:
        same = all(consistency.values())
        print(
            f"labels of {CHECK_TEXTS} texts: in-process model vs {len(consistency)} servers: "
            + ("all the same" if same else f"DIFFER: {consistency}")
        )
    ood = results.get("ood")
    if ood:
        print(
            f"out-of-scope score: {ood['setting']} true vs false; detector"
            f" {ood['detector'].get('method')}; {ood['answers_checked']} answers per side checked"
            " before and after the load (a float ood_score on, None off); labels on vs off: "
            + ("the same" if ood["same_labels"] else "DIFFER")
        )
    noisy = [p["target"] for p in results.get("points", []) if p.get("other_cpu_cores", 0) > NOISY]
    noisy += [
        f"limit {k}" for k, v in (limit or {}).get("other_cpu_cores", {}).items() if v > NOISY
    ]
    if noisy:
        print(
            f"WARNING: other processes used over {NOISY} cores during {len(noisy)} measurement(s)"
            f" ({', '.join(sorted(set(noisy)))}): those figures are not trustworthy"
        )
    print()
    print(
        "Each ratio is the median of the ratios of rounds measured side by side"
        " (detail: each round's pair)."
    )
    print(f"{'check':<56}{'ratio':>8}  {'floor':<8}{'result':<7} detail")
    for v in results.get("verdicts", []):
        value = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}"
        verdict = "n/a" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        print(f"{v['check']:<56}{value:>8}  {v['op']} {v['floor']:<5}{verdict:<7} {v['detail']}")
    if results.get("error"):
        print(f"\nINCOMPLETE: {results['error']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default: bench/gateway_results.json; with --only, "
        "bench/gateway_<part>_results.json, so that a part never overwrites a full run's).",
    )
    parser.add_argument("--quick", action="store_true", help="Short smoke run; figures are noisy.")
    parser.add_argument("--duration", type=float, default=None, help="Seconds per load point.")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (logs).")
    parser.add_argument(
        "--only",
        choices=["ood"],
        default=None,
        help="Run one part alone: ood = the out-of-scope score on vs off (part 6).",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="Paired rounds per floor (default 3; 1 quick)."
    )
    args = parser.parse_args()
    if args.out is None:
        name = f"gateway_{args.only}_results.json" if args.only else "gateway_results.json"
        args.out = BENCH / name
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.data / "test.csv").is_file():
        parser.error(f"{args.data / 'test.csv'} not found; pass --data")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    started = time.perf_counter()
    results: dict[str, Any] = {
        "quick": args.quick,
        "only": args.only,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results["machine"] = machine()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    log(f"working folder {tmp}")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        run(args, results, procs, tmp)
    except BaseException as exc:  # report what was measured, then stop everything
        code = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"stopped early: {results['error']}")
        if not isinstance(exc, (KeyboardInterrupt, RuntimeError)):
            import traceback

            traceback.print_exc()
    finally:
        procs.stop_all()
        results["seconds"] = time.perf_counter() - started
        results["verdicts"] = verdicts(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        report(results)
        print(f"\nwrote {args.out} in {results['seconds']:.0f} s")
        if args.keep or code:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
