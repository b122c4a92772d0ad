"""Benchmark: the gateway against the model's own limit and against `mlflow models serve`.

Everything runs in one go, on the same texts (Banking77's test set, shuffled once
with a fixed seed), with one load generator (wrk when present, else a Python
asyncio + httpx generator with a fixed number of keep-alive connections):

0. setup: one quick LoRA adapter trained (1 epoch on ~1,000 rows: accuracy is not the
   point, the weights just have to be real) and eight adapters registered in a temporary
   LIFECYCLE_HOME: mix-0 with the trained weights, mix-1..7 derived from them by seed
   (seeded noise on every LoRA matrix, the head's rows dealt to the labels by a seeded
   permutation; ``derived``), so that each answers differently. Setup stops unless every
   pair differs in >= 50% of labels and of confidences on 64 texts, as computed in this
   process from the registered versions; those in-process answers are the reference every
   server's answers are compared with below.
1. limit: the raw forward in this process (AdapterHost.logits_and_embeddings), texts
   sorted by length, batch sizes 8/16/32/64 (packed, as the host runs on a CPU) and
   32/64 padded; two model workers (one torch thread each, both copies loaded and warmed
   before the clock starts); unsorted batches; batches of one. The limit is the best of
   them.
2. gateway: `lifecycle serve` as a subprocess; one sweep of 1 text per request at
   concurrency 1/4/16/64 and 16 texts per request at 1/4/16; the same gateway with
   LIFECYCLE_MAX_BATCH_SIZE=1 (no batching) at 1 text per request, concurrency 16. Per
   point it also reads the gateway's /metrics (mean batch, model-thread busy share) and
   the CPU of the server, of its event-loop thread, and of unrelated processes (noise).
   Each point starts once the work the previous one left queued is done.
3. `mlflow models serve` on the same adapter as a models-from-code pyfunc
   (bench/pyfunc_specialist.py), running beside the gateway in two configurations: its
   defaults (1 worker, torch on every core) and `--workers 2` with one torch thread per
   worker (OMP_NUM_THREADS=MKL_NUM_THREADS=1), each ready once all its workers logged
   their startup (they load the model before) and warmed up at c=16 before any timing.
   The peer's figure in a round is the faster of the two.
4. 8 specialists on one base: requests spread at random over the 8 adapters vs all to
   mix-0. The load generator keeps one response in 10 (CHECK_EVERY) on both sides, and
   every answer in it is compared with its own adapter's in-process answer for the same
   text (the text is the one the gateway logged under the answer's request id): the label
   must be the same, the confidence within 1e-3 (a different label only where the
   in-process top two are within 1e-4 counts as a near-tie, reported apart). Before any
   load, every server (the gateway's 10 adapters, both pyfuncs, the gateway without
   batching) answers 8 texts that are compared the same way.
5. shadow: a specialist with a challenger vs one without, paced at ~30% of the
   capacity measured at concurrency 16; champion p50 latency on vs off.
6. the out-of-scope score (open-world issue): two `lifecycle serve` gateways up side by
   side, LIFECYCLE_OOD_SCORES on and off, the same load on each in turn (16 texts per
   request and 1 text per request, both at concurrency 16); throughput on / off. The
   adapter must carry its detector (ood.safetensors, fitted by training), and every
   answer is checked before and after the load: a float ood_score on, None off.
7. an extractor and a classifier on one gateway (extraction issue #19): a quick SNIPS
   extractor (``slots``: 1 epoch on ~1,000 rows, --extractor-rows; the weights must be real,
   the accuracy does not matter) registered beside mix-0 (Banking77), one `lifecycle serve`
   serving just those two; at c=16 and 16 then 1 text(s) per request, all requests to the
   classifier (Banking77 test texts), all to the extractor (SNIPS test texts), and each
   request to one of them at random, 50/50, each with its own texts. Per round the ratio is
   mixed / the slower of the two alone (floor 0.8 at both request sizes); the order of the
   three loads alternates. Answers: 8 texts of each before and after the load, and one
   response in CHECK_EVERY of all three loads, compared with the in-process answers of the
   registered versions: a classifier's label and confidence as in part 4, an extractor's
   spans (label, start, end) equal, each span's confidence and the answer's within 1e-3, the
   same fields. Any mismatch fails the part. The gateway's mean batch per run is recorded.
8. int8 linear layers (issue #17, LIFECYCLE_QUANTIZE): SOLO's champion on float32 and on
   int8 hosts in this process (each on one host of every core and on two of one thread; the
   limit of a runtime in a round is the better way), then two `lifecycle serve` gateways up
   side by side, LIFECYCLE_QUANTIZE=off and int8 (each must report its runtime in /readyz),
   at c=16 with 16 and 1 text(s) per request, and `mlflow models serve` with 1 and 2 workers
   (the peer's figure is the faster), in paired rounds whose order alternates. Floors: int8
   limit / float32 limit >= 1.6, int8 gateway / float32 gateway at 16 texts/request >= 1.5,
   int8 gateway / the peer at its best >= 3 (float32's floor against it is 2), Banking77 test
   accuracy lost <= 0.5 point (the whole test set, both runtimes in process), and a
   stationary window (Banking77 test texts, labels hidden) served in int8 raises no alarm
   against the int8-scored reference (the verdict against the float32 one is reported).
   Int8 answers depend a little on the batch (activations are quantized per call), so the
   int8 gateway's answers are compared with in-process ones by label, not confidence.

Every ratio floor is checked in rounds (3 in full mode, --rounds to change): within a round
the two figures of a ratio are measured one after the other (the limit's two ways once more,
one worker at its best batch and two workers, and the better of the two, then the gateway at
its best concurrency; the gateway, then `mlflow models serve` with 1 and with 2 workers, at
c=16; 8 adapters and 1; shadow off and on; score on and off, in alternating order; the
classifier, the extractor and both mixed, in alternating order), and the
verdict is the median of the rounds' ratios. On a shared machine the speed drifts by more
than the floors' margins over a run.

It prints a table of the floors (PASS/FAIL), writes everything as JSON (--out) and exits 1
when any floor fails or could not be judged (n/a), so that it can gate; the answers'
floor is 0 mismatches (plus unverifiable answers) with at least 5% of the answers under
load checked.

    .venv/bin/python bench/gateway.py [--quick] [--out bench/gateway_results.json]
    .venv/bin/python bench/gateway.py --only ood [--rounds 5]   # part 6 alone
    .venv/bin/python bench/gateway.py --only mixed [--rounds 5] # part 7 alone
    .venv/bin/python bench/gateway.py --only int8 [--rounds 5]  # part 8 alone

Full mode took ~18 minutes on 2 cores before the second `mlflow models serve`, the limit's
second way per round and the answer checks were added (more now; not timed yet); --quick is
a smoke run whose figures are too short to quote; --only ood takes ~4 minutes plus ~1 per
extra round (it trains, and registers, only the one specialist it serves); --only mixed
--rounds 5 took 25 minutes on 2 cores shared with other jobs (load average ~15): the two
quick trainings 4.5 and 9 minutes of it, then ~2 minutes per round (it trains, and
registers, only the classifier and the extractor it serves).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
#: Texts each server answers before any load, compared with the in-process answers.
CHECK_TEXTS = 8
#: Under the adapters' load the load generator keeps one answer in CHECK_EVERY, and each kept
#: answer is compared with its adapter's in-process answer for the same text (10%: a sample
#: large enough to catch a routing slip that touches a share of the traffic).
CHECK_EVERY = 10
#: A server's confidence may differ from the in-process one by float noise only (another batch
#: composition, another thread count: ~1e-6 on a CPU); a larger gap means other weights.
CONFIDENCE_TOLERANCE = 1e-3
#: A different label counts as a near-tie, not a wrong answer, where the in-process probability
#: of the server's label is within this of the top one.
TIE = 1e-4
#: Seeded noise added to every LoRA matrix of a derived adapter, relative to the matrix's RMS:
#: enough to change the answer's confidence on most texts (and its label on some) by the LoRA
#: weights alone, which are the part a packed pass routes per token.
LORA_NOISE = 2.0
#: Setup fails unless every pair of served adapters differs in at least this share of a
#: sample's labels and, separately, of its confidences (permuting the head's rows leaves the
#: top probability as it was, so differing confidences come from the LoRA weights).
MIN_DIFFER = 0.5

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


# -- setup: one quick adapter, and seven derived from it --


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
    #: How each registered name's weights were made: "trained", or the derivation's seed.
    weights: dict[str, str] = field(default_factory=dict)


def setup(
    tmp: Path, data: Path, *, train_rows: int, names: list[str], device: str = "auto"
) -> Setup:
    """Train one adapter and register it under ``names``: MIX[k] for k >= 1 gets weights
    derived from it (``derived``), every other name the trained ones (SHADOWED also as its
    challenger). An error if the registered adapter lacks the out-of-scope detector part 6
    measures."""
    from lifecycle.config.spec import SpecialistSpec, TrainingSpec
    from lifecycle.training.data import load_table
    from lifecycle.training.train import train_specialist

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
    result = train_specialist(spec, subset, device=device, progress=False)
    train_seconds = time.perf_counter() - started
    log(
        f"setup: trained in {train_seconds:.1f} s "
        f"(val accuracy {getattr(result.evaluation, 'accuracy', float('nan')):.3f});"
        " registering"
    )
    return register(
        tmp, spec, result, names=names, train_seconds=train_seconds, train_rows=len(subset)
    )


@contextlib.contextmanager
def derived(result: Any, k: int) -> Iterator[str]:
    """The trained adapter in ``result`` turned, while the block runs, into the k-th derived
    one; k == 0 leaves it as trained. Yields how its weights were made.

    Derived: seeded Gaussian noise (LORA_NOISE x each matrix's RMS) on every LoRA matrix and
    the head's rows dealt to the labels by a seeded permutation. Eight trained adapters would
    cost eight trainings; the forward costs the same whatever the weights' values, and what
    the bench needs is adapters whose answers differ, so that an answer routed to the wrong
    adapter shows.
    """
    if k == 0:
        yield "trained"
        return
    import torch

    lora, head = result.host.trainable_parameters(result.adapter_id)
    saved = [p.detach().clone() for p in (*lora, *head)]
    seed = SEED * 1000 + k
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for p in lora:
                rms = p.pow(2).mean().sqrt()
                noise = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
                p.add_(noise * rms * LORA_NOISE)
            order = torch.randperm(head[0].shape[0], generator=generator).to(head[0].device)
            for p in head:
                p.copy_(p[order])
        yield f"derived: seed {seed}, LoRA noise {LORA_NOISE} x RMS, head rows permuted"
    finally:
        with torch.no_grad():
            for p, original in zip((*lora, *head), saved, strict=True):
                p.copy_(original)


def register(
    tmp: Path,
    spec: Any,
    result: Any,
    *,
    names: list[str],
    train_seconds: float,
    train_rows: int,
) -> Setup:
    """Register the trained adapter (derived for MIX[1:]) under ``names`` in a fresh home
    under ``tmp``, and write the specialists file a gateway serving them reads."""
    import yaml

    from lifecycle.config.settings import Settings
    from lifecycle.model.ood import OOD_FILE
    from lifecycle.registry.models import CHALLENGER, CHAMPION, Registry

    home = tmp / "home"
    started = time.perf_counter()
    registry = Registry(Settings(home=home))
    weights: dict[str, str] = {}
    for name in names:
        k = MIX.index(name) if name in MIX else 0
        with derived(result, k) as how:
            info = registry.log_training(
                spec.model_copy(update={"name": name}), result, trigger="manual"
            )
        weights[name] = how
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
    _, folder = registry.download(names[0], "champion")
    if not (folder / OOD_FILE).is_file():
        raise RuntimeError(f"the registered adapter {folder} has no {OOD_FILE}")
    detector = result.host.detector(result.adapter_id).describe()

    specialists_file = tmp / "specialists.yaml"
    entries = [
        {
            "name": name,
            "base_model": spec.base_model,
            "training": {"max_length": spec.training.max_length},
            "escalation": {"confidence_threshold": 0.0, "fallback": "none"},
            "promotion": {"shadow_sample_rate": 1.0},
        }
        for name in names
    ]
    specialists_file.write_text(yaml.safe_dump({"specialists": entries}, sort_keys=False))
    versions = len(names) + int(SHADOWED in names)
    log(
        f"setup: registered {versions} versions in {register_seconds:.1f} s"
        f" ({sum(w != 'trained' for w in weights.values())} derived); detector "
        f"{detector.get('method')} in {folder / OOD_FILE}"
    )
    return Setup(
        home=home,
        specialists_file=specialists_file,
        tracking_uri=registry.settings.tracking_uri,
        train_seconds=train_seconds,
        register_seconds=register_seconds,
        train_rows=train_rows,
        val_accuracy=float(result.evaluation.accuracy),
        detector=detector,
        weights=weights,
    )


# -- answers: every served adapter's own, in process --


@dataclass
class Tally:
    """Answers compared with their adapter's in-process answer."""

    checked: int = 0
    mismatches: int = 0
    #: A different label where the in-process top two are within TIE: float noise, not a fault.
    ties: int = 0
    #: Kept answers that could not be compared (malformed, or not in the traffic store).
    unverifiable: int = 0
    #: The largest confidence gap among answers that matched.
    max_confidence_gap: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def faults(self) -> int:
        return self.mismatches + self.unverifiable

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "mismatches": self.mismatches,
            "ties": self.ties,
            "unverifiable": self.unverifiable,
            "max_confidence_gap": self.max_confidence_gap,
            "examples": self.examples,
        }

    def note(self, example: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(example)


class Oracle:
    """Each served adapter's own answers, computed in this process on a host that loaded
    the registered versions the way the gateway does; cached per (name, text)."""

    def __init__(
        self,
        host: Any,
        ids: dict[str, str],
        *,
        confidence_tolerance: float = CONFIDENCE_TOLERANCE,
        tie: float = TIE,
    ) -> None:
        self.host = host
        self.ids = ids
        self.confidence_tolerance = confidence_tolerance
        self.tie = tie
        self._cache: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_registry(
        cls,
        home: Path,
        names: Sequence[str],
        *,
        device: str = "auto",
        confidence_tolerance: float = CONFIDENCE_TOLERANCE,
        tie: float = TIE,
    ) -> Oracle:
        from lifecycle.config.settings import Settings
        from lifecycle.model.host import AdapterHost
        from lifecycle.registry.models import Registry

        registry = Registry(Settings(home=home))
        host = AdapterHost("minilm", device=device)
        ids = {name: registry.load(host, name, "champion")[0] for name in names}
        return cls(host, ids, confidence_tolerance=confidence_tolerance, tie=tie)

    def answers(self, name: str, texts: Sequence[str]) -> list[Any]:
        missing = list(dict.fromkeys(t for t in texts if (name, t) not in self._cache))
        if missing:
            found = self.host.predict(missing, self.ids[name])
            for text, prediction in zip(missing, found, strict=True):
                self._cache[(name, text)] = prediction
        return [self._cache[(name, t)] for t in texts]

    def compare(
        self,
        tally: Tally,
        name: str,
        texts: Sequence[str],
        labels: Sequence[str],
        confidences: Sequence[float],
        *,
        where: str,
    ) -> None:
        """Count each (label, confidence) a server gave against ``name``'s own answer."""
        label_set = list(self.host.meta(self.ids[name]).labels)
        own = self.answers(name, texts)
        for text, label, confidence, pred in zip(texts, labels, confidences, own, strict=True):
            tally.checked += 1
            gap = abs(float(confidence) - pred.confidence)
            if gap <= self.confidence_tolerance and label == pred.label:
                tally.max_confidence_gap = max(tally.max_confidence_gap, gap)
                continue
            if gap <= self.confidence_tolerance and label in label_set:
                runner_up = pred.probabilities[label_set.index(label)]
                if runner_up >= pred.confidence - self.tie:
                    tally.ties += 1
                    continue
            tally.mismatches += 1
            tally.note(
                f"{where}: {name} answered {text[:60]!r} with {label} ({float(confidence):.4f});"
                f" in process {pred.label} ({pred.confidence:.4f})"
            )

    def task(self, name: str) -> str:
        """The task kind of ``name``'s registered version: classification or extraction."""
        return str(getattr(self.host.meta(self.ids[name]), "task", "classification"))

    def compare_entities(
        self,
        tally: Tally,
        name: str,
        texts: Sequence[str],
        answers: Sequence[Any],
        *,
        where: str,
    ) -> None:
        """Count each extractor answer a server gave (a ``predictions`` item: ``entities``,
        ``fields``, ``confidence``) against ``name``'s own: the same spans (label, start, end),
        each span's confidence and the answer's within the tolerance, and the same fields. A
        malformed answer is unverifiable."""
        from lifecycle.extraction.spans import fields

        own = self.answers(name, texts)
        for text, answer, pred in zip(texts, answers, own, strict=True):
            try:
                served = sorted(
                    (str(e["label"]), int(e["start"]), int(e["end"]), float(e["confidence"]))
                    for e in answer["entities"]
                )
                confidence = float(answer["confidence"])
                served_fields = {str(k): str(v) for k, v in dict(answer["fields"]).items()}
            except (KeyError, TypeError, ValueError):
                tally.unverifiable += 1
                tally.note(f"{where}: {name}'s answer is not an extractor's: {str(answer)[:120]}")
                continue
            tally.checked += 1
            mine = sorted(
                (e.label, e.start, e.end, float(e.confidence or 0.0)) for e in pred.entities or ()
            )
            same_spans = [s[:3] for s in served] == [m[:3] for m in mine]
            gap = max(
                [abs(confidence - pred.confidence)]
                + [abs(s[3] - m[3]) for s, m in zip(served, mine, strict=False)]
            )
            if (
                same_spans
                and gap <= self.confidence_tolerance
                and served_fields == fields(pred.entities or ())
            ):
                tally.max_confidence_gap = max(tally.max_confidence_gap, gap)
                continue
            tally.mismatches += 1
            tally.note(
                f"{where}: {name} answered {text[:60]!r} with {[s[:3] for s in served]}"
                f" ({confidence:.4f}); in process {[m[:3] for m in mine]} ({pred.confidence:.4f})"
            )


def distinct_answers(oracle: Oracle, names: Sequence[str], texts: Sequence[str]) -> dict[str, Any]:
    """How much the served adapters' answers differ on ``texts``; an error below MIN_DIFFER,
    where a request answered by the wrong adapter could pass for a right one."""
    answers = {name: oracle.answers(name, texts) for name in names}
    label_shares, confidence_shares = [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs = list(zip(answers[a], answers[b], strict=True))
            label_shares.append(sum(x.label != y.label for x, y in pairs) / len(pairs))
            confidence_shares.append(
                sum(abs(x.confidence - y.confidence) > CONFIDENCE_TOLERANCE for x, y in pairs)
                / len(pairs)
            )
    out = {
        "adapters": len(names),
        "texts": len(texts),
        "min_label_differ": min(label_shares, default=1.0),
        "min_confidence_differ": min(confidence_shares, default=1.0),
    }
    log(
        f"setup: {len(names)} adapters on {len(texts)} texts: every pair differs in at least"
        f" {out['min_label_differ']:.0%} of labels and {out['min_confidence_differ']:.0%} of"
        " confidences"
    )
    if out["min_label_differ"] < MIN_DIFFER or out["min_confidence_differ"] < MIN_DIFFER:
        raise RuntimeError(
            f"served adapters answer too much alike (floor {MIN_DIFFER:.0%} per pair): {out}"
        )
    return out


def check_recorded(
    record: Path, oracle: Oracle, traffic_url: str, tally: Tally, *, where: str
) -> int:
    """Compare every answer the load generator kept in ``record`` (one response body per
    line) with its adapter's in-process answer for the same text; the text is the one the
    gateway logged under the answer's request id. A classifier's answers are held to
    ``Oracle.compare``, an extractor's to ``Oracle.compare_entities``. Returns the number of
    answers kept."""
    import sqlalchemy as sa

    from lifecycle.store.schema import requests

    kept: list[tuple[str, str, Any]] = []  # specialist, request id, the answer as served
    lines = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
    for line in lines:
        try:
            body = json.loads(line)
            kept.extend(
                (str(body["specialist"]), str(p["request_id"]), p) for p in body["predictions"]
            )
        except (ValueError, KeyError, TypeError):
            tally.unverifiable += 1
            tally.note(f"{where}: a kept response is not an answer: {line[:120]!r}")
    stored: dict[str, tuple[str, str | None]] = {}
    engine = sa.create_engine(traffic_url)
    try:
        with engine.connect() as conn:
            ids = [k[1] for k in kept]
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(requests.c.id, requests.c.specialist, requests.c.text).where(
                        requests.c.id.in_(ids[start : start + 500])
                    )
                )
                stored.update((row.id, (row.specialist, row.text)) for row in rows)
    finally:
        engine.dispose()
    by_name: dict[str, tuple[list[str], list[Any]]] = {}
    for name, request_id, answer in kept:
        row = stored.get(request_id)
        if row is None or row[0] != name or row[1] is None or name not in oracle.ids:
            tally.unverifiable += 1
            tally.note(f"{where}: answer {request_id} of {name} has no stored text to check")
            continue
        texts, answers = by_name.setdefault(name, ([], []))
        texts.append(row[1])
        answers.append(answer)
    for name, (texts, answers) in by_name.items():
        if oracle.task(name) == "extraction":
            oracle.compare_entities(tally, name, texts, answers, where=where)
            continue
        checkable: list[tuple[str, str, float]] = []
        for text, answer in zip(texts, answers, strict=True):
            try:
                checkable.append((text, str(answer["label"]), float(answer["confidence"])))
            except (KeyError, TypeError, ValueError):
                tally.unverifiable += 1
                tally.note(f"{where}: {name}'s answer lacks label/confidence: {str(answer)[:120]}")
        if checkable:
            oracle.compare(
                tally,
                name,
                [c[0] for c in checkable],
                [c[1] for c in checkable],
                [c[2] for c in checkable],
                where=where,
            )
    return len(kept)


# -- 1. the limit --


def measure_limit(st: Setup, texts: list[str], *, quick: bool) -> dict[str, Any]:
    """Sequences/s of the raw forward in this process, on the adapter the gateway serves."""
    from lifecycle.config.settings import Settings
    from lifecycle.model.host import AdapterHost
    from lifecycle.registry.models import Registry

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
    out["one_worker_config"] = {"batch": best_config[1], "packed": best_config[2]}
    # The gateway may run two model workers (a copy of the model each, one torch thread
    # each): the limit is the better of the two ways to spend the cores, so that the
    # ratios below never credit the gateway with a configuration the limit did not try.
    # Loading the two copies is no part of a forward: it happens before the clock starts.
    _build_two_workers(st, sample, int(best_bs))
    out["two_workers"] = step(
        "two_workers",
        lambda: _two_workers(sample, int(best_bs)),
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
    ones = sample[:200] if quick else sample[:1000]
    out["batch_1_texts"] = len(ones)
    out["batch_1"] = step(
        "batch_1", lambda: batches(1, 1, ones), len(ones), f"batch of one ({len(ones)} texts)"
    )
    return out


def limit_round(texts: list[str], limit: dict[str, Any]) -> dict[str, float]:
    """Both ways the limit can spend the cores (one worker at its best batch and packing, two
    workers with one thread each), measured once more: a paired round divides by the better
    of the two as measured in that round, since which one wins changes with the machine."""
    assert _HOST is not None, "measure_limit first"
    host, adapter_id = _HOST
    config = limit["one_worker_config"]
    sample = texts[: limit["texts"]]

    def one() -> None:
        packing, host.packing = host.packing, bool(config["packed"] and host.packing)
        try:
            host.logits_and_embeddings(sample, adapter_id, batch_size=config["batch"])
        finally:
            host.packing = packing

    out: dict[str, float] = {}
    for key, run in (("one", one), ("two", lambda: _two_workers(sample, limit["best_batch_size"]))):
        watch = CpuWatch()
        started = time.perf_counter()
        run()
        out[key] = len(sample) / (time.perf_counter() - started)
        out[f"{key}_other_cpu_cores"] = watch.other_cores()
    out["best"] = max(out["one"], out["two"])
    noisy = max(out["one_other_cpu_cores"], out["two_other_cpu_cores"])
    log(
        f"limit again: one worker (batch {config['batch']}"
        f"{', packed' if config['packed'] else ', padded'}) {out['one']:.0f} seq/s, two workers"
        f" {out['two']:.0f} seq/s: {out['best']:.0f}"
        + (f"  (other processes used {noisy:.2f} cores: noisy)" if noisy > NOISY else "")
    )
    return out


_HOST: tuple[Any, str] | None = None


def _build_two_workers(st: Setup, texts: list[str], batch_size: int) -> None:
    """The two hosts of the two-worker limit, loaded and warmed once."""
    import torch

    from lifecycle.config.settings import Settings
    from lifecycle.model.host import AdapterHost
    from lifecycle.registry.models import Registry

    global _HOSTS
    if _HOSTS is not None:
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        registry = Registry(Settings(home=st.home))
        hosts = []
        for _ in range(2):
            host = AdapterHost("minilm")
            adapter_id, _ = registry.load(host, SOLO, "champion")
            host.logits_and_embeddings(texts[:batch_size], adapter_id, batch_size=batch_size)
            hosts.append((host, adapter_id))
        _HOSTS = hosts
    finally:
        torch.set_num_threads(before)


def _two_workers(texts: list[str], batch_size: int) -> None:
    """Sorted batches dealt out to two hosts, each on its own thread with one torch thread."""
    import threading

    import torch

    hosts = _HOSTS
    assert hosts is not None, "_build_two_workers first"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ordered = sorted(texts, key=len)
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]

        def run(k: int) -> None:
            host, adapter_id = hosts[k]
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
        record: Path | None = None,
    ) -> dict[str, Any]:
        """One closed-loop run; with ``record``, one response body in CHECK_EVERY is appended
        to that file (a line each) for the answers to be checked afterwards."""
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
            if think_ms > 0 or record is not None:
                args.append(f"{think_ms:.3f}")
            if record is not None:
                args += [str(record), str(CHECK_EVERY)]
            done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
            return parse_wrk(done.stdout)
        return asyncio.run(
            _python_load(
                base_url,
                bodies,
                connections=connections,
                seconds=seconds,
                think_ms=think_ms,
                record=record,
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
    base_url: str,
    bodies: Path,
    *,
    connections: int,
    seconds: float,
    think_ms: float,
    record: Path | None = None,
) -> dict[str, Any]:
    import httpx

    requests = []
    for line in bodies.read_text(encoding="utf-8").splitlines():
        path, _, body = line.partition("\t")
        requests.append((path, body.encode()))
    latencies: list[float] = []
    kept: list[str] = []
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
                    if record is not None and len(latencies) % CHECK_EVERY == 0:
                        kept.append(response.text.replace("\n", " "))
                else:
                    errors += 1
                if think_ms > 0:
                    await asyncio.sleep(rng.expovariate(1000.0 / think_ms))  # mean think_ms

        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    if record is not None:
        with record.open("a", encoding="utf-8") as out:
            out.writelines(f"{text}\n" for text in kept)

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
    procs: Processes,
    st: Setup,
    tmp: Path,
    *,
    label: str,
    extra: dict[str, str] | None = None,
    name: str = SOLO,
) -> Server:
    """``lifecycle serve`` on ``st``'s registry; ``name`` is the specialist ``drain`` probes."""
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
    args = (
        [str(exe), "serve"]
        if exe.exists()
        else [sys.executable, "-m", "lifecycle.cli.main", "serve"]
    )
    log_file = tmp / f"{label}.log"
    proc = procs.start(args, env=env, log_file=log_file, cwd=tmp)
    base_url = f"http://127.0.0.1:{port}"
    ready = wait_until(proc, f"{base_url}/readyz", log_file, timeout_s=240, what=f"gateway {label}")
    log(f"{label}: ready in {ready:.1f} s at {base_url} (log {log_file})")
    probe = (f"/v1/specialists/{name}/predict", gateway_body(["probe"]))
    return Server(label, proc, base_url, log_file, ready, metrics=True, probe=probe)


def check_gateway(server: Server, name: str, texts: list[str]) -> tuple[list[str], list[float]]:
    """The labels and confidences the gateway gives ``texts``; an error if malformed."""
    status, body = http(
        "POST", f"{server.base_url}/v1/specialists/{name}/predict", {"texts": texts}
    )
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"gateway {name} answered {status}: {str(body)[:500]}")
    if not all("label" in p and "confidence" in p for p in preds):
        raise RuntimeError(f"gateway {name}: predictions lack label/confidence: {preds[:1]}")
    return [str(p["label"]) for p in preds], [float(p["confidence"]) for p in preds]


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
    gen: LoadGenerator,
    server: Server,
    bodies: Path,
    point: Point,
    *,
    seconds: float,
    record: Path | None = None,
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
        record=record,
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

    from lifecycle.config.settings import Settings
    from lifecycle.registry.models import Registry

    registry = Registry(Settings(home=st.home))
    _, folder = registry.download(SOLO, "champion")
    experiment = registry.experiment_id("bench-pyfunc", kind="pyfunc")
    # The registry keeps its client private and sets no process-wide URI; mlflow's fluent
    # API logs the peer's model, so point it at the same store.
    mlflow.set_tracking_uri(st.tracking_uri)
    mlflow.set_registry_uri(st.tracking_uri)
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


def start_mlflow(procs: Processes, st: Setup, tmp: Path, *, workers: int = 1) -> Server:
    """``mlflow models serve`` with ``workers`` uvicorn worker processes, each with its own
    copy of the model; ready once every worker has loaded it."""
    port = free_port()
    extra = {"MLFLOW_TRACKING_URI": st.tracking_uri, "MLFLOW_REGISTRY_URI": st.tracking_uri}
    if workers > 1:
        # One torch thread per worker process, as the gateway gives each of its model workers:
        # two processes that each spawn a thread per core would fight over the same cores.
        extra.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env = base_env(extra)
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
        "--workers",
        str(workers),
    ]
    label = f"mlflow-w{workers}"
    log_file = tmp / f"{label}.log"
    proc = procs.start(args, env=env, log_file=log_file, cwd=tmp)
    base_url = f"http://127.0.0.1:{port}"
    what = f"mlflow models serve --workers {workers}"
    started = time.perf_counter()
    wait_until(proc, f"{base_url}/ping", log_file, timeout_s=240, what=what)
    # /ping answers as soon as one worker serves; each worker loads the model before it logs
    # its startup, so once every worker has logged it none is still loading.
    while _startups(log_file) < workers:
        if proc.poll() is not None or time.perf_counter() - started > 240:
            raise RuntimeError(
                f"{what}: {_startups(log_file)} of {workers} workers started; log tail:\n"
                + tail(log_file)
            )
        time.sleep(0.5)
    ready = time.perf_counter() - started
    log(f"{what}: ready in {ready:.1f} s at {base_url}")
    probe = ("/invocations", mlflow_body(["probe"]))
    return Server(label, proc, base_url, log_file, ready, metrics=False, probe=probe)


def _startups(log_file: Path) -> int:
    """Worker processes of a uvicorn server that have completed their startup."""
    try:
        return log_file.read_text(errors="replace").count("Application startup complete")
    except OSError:
        return 0


def check_mlflow(server: Server, texts: list[str]) -> tuple[list[str], list[float]]:
    """The labels and confidences the pyfunc gives ``texts``; an error if malformed."""
    status, body = http("POST", f"{server.base_url}/invocations", mlflow_body(texts))
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"mlflow models serve answered {status}: {str(body)[:500]}")
    if not all(isinstance(p, dict) and "label" in p and "confidence" in p for p in preds):
        raise RuntimeError(f"mlflow models serve: predictions lack label/confidence: {preds[:1]}")
    return [str(p["label"]) for p in preds], [float(p["confidence"]) for p in preds]


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


# -- 7. an extractor and a classifier on one gateway, mixed --

#: The extraction specialist of part 7 (SNIPS slots), served beside the classifier SOLO.
EXTRACTOR = "slots"
#: Part 7's three loads, in the order odd rounds run them (even rounds run them reversed).
MIXED_KINDS = ("classifier", "extractor", "mixed")


def snips_default() -> Path:
    """SNIPS beside the repository, else the shared copy."""
    for candidate in (ROOT.parent / "shared" / "data" / "snips", Path("/work/shared/data/snips")):
        if (candidate / "train.jsonl").is_file():
            return candidate
    return ROOT.parent / "shared" / "data" / "snips"


def snips_texts(folder: Path) -> list[str]:
    """SNIPS's test texts, shuffled once with the fixed seed."""
    import pandas as pd

    texts = [str(t) for t in pd.read_json(folder / "test.jsonl", lines=True)["text"].tolist()]
    random.Random(SEED).shuffle(texts)
    return texts


def mixed_lines(
    sources: dict[str, Sequence[str]], *, per_request: int, make: Any, seed: int = SEED
) -> list[str]:
    """Requests of mixed traffic, one a line ("path<TAB>json"): each to one of ``sources``'
    paths, drawn at random with equal odds (fixed seed), carrying the next ``per_request``
    texts of that path's own list (wrapping around), so that every specialist gets the texts
    it would get alone. As many requests as all the lists hold whole chunks."""
    rng = random.Random(seed + per_request)
    chunks = {
        path: [
            list(texts[i : i + per_request])
            for i in range(0, len(texts) - per_request + 1, per_request)
        ]
        for path, texts in sources.items()
    }
    empty = [path for path, found in chunks.items() if not found]
    if empty:
        raise ValueError(f"fewer than {per_request} texts for {empty}")
    paths = list(chunks)
    taken = dict.fromkeys(paths, 0)
    lines = []
    for _ in range(sum(len(found) for found in chunks.values())):
        path = rng.choice(paths)
        chunk = chunks[path][taken[path] % len(chunks[path])]
        taken[path] += 1
        lines.append(f"{path}\t{json.dumps(make(chunk), ensure_ascii=True)}")
    return lines


def add_extractor(
    st: Setup, tmp: Path, snips: Path, *, train_rows: int, device: str = "auto"
) -> tuple[Setup, dict[str, Any]]:
    """Train a quick SNIPS extractor (1 epoch on ``train_rows`` rows: accuracy is not the
    point, the weights just have to be real), register it as EXTRACTOR's champion in ``st``'s
    home, and write a specialists file with SOLO and EXTRACTOR only. Returns ``st`` with that
    file, and what the training did."""
    import dataclasses

    import pandas as pd
    import yaml

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import CHAMPION, Registry
    from lifecycle.training.train import train_specialist

    train = pd.read_json(snips / "train.jsonl", lines=True)
    subset = train.sample(n=min(train_rows, len(train)), random_state=SEED)
    spec = SpecialistSpec.model_validate(
        {
            "name": EXTRACTOR,
            "task": "extraction",
            "training": {
                "epochs": 1,
                "evals_per_epoch": 1,
                "validation_fraction": 0.1,
                "max_length": 64,
                "batch_size": 32,
            },
        }
    )
    log(f"part 7: training an extractor, 1 epoch on {len(subset)} SNIPS rows")
    started = time.perf_counter()
    result = train_specialist(
        spec, subset[["text", "entities"]].reset_index(drop=True), device=device, progress=False
    )
    train_seconds = time.perf_counter() - started
    registry = Registry(Settings(home=st.home))
    info = registry.log_training(spec, result, trigger="manual")
    registry.set_alias(EXTRACTOR, CHAMPION, info.version)
    labels = list(result.meta.labels)
    micro_f1 = float(getattr(result.evaluation, "micro_f1", float("nan")))
    log(
        f"part 7: extractor trained in {train_seconds:.1f} s ({len(labels)} entity labels,"
        f" val micro-F1 {micro_f1:.3f}), registered as {EXTRACTOR} v{info.version}"
    )
    common = {
        "base_model": spec.base_model,
        "training": {"max_length": spec.training.max_length},
        "escalation": {"confidence_threshold": 0.0, "fallback": "none"},
    }
    entries = [
        {"name": SOLO, **common, "promotion": {"shadow_sample_rate": 1.0}},
        {"name": EXTRACTOR, "task": "extraction", "entities": labels, **common},
    ]
    specialists_file = tmp / "specialists-mixed.yaml"
    specialists_file.write_text(yaml.safe_dump({"specialists": entries}, sort_keys=False))
    figures = {
        "name": EXTRACTOR,
        "train_rows": len(subset),
        "train_seconds": train_seconds,
        "entity_labels": len(labels),
        "val_micro_f1": micro_f1,
        "version": int(info.version),
    }
    return dataclasses.replace(st, specialists_file=specialists_file), figures


def check_extractor(server: Server, name: str, texts: list[str]) -> list[dict[str, Any]]:
    """The answers an extractor gives ``texts``; an error unless each has entities and
    fields."""
    status, body = http(
        "POST", f"{server.base_url}/v1/specialists/{name}/predict", {"texts": texts}
    )
    preds = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(preds, list) or len(preds) != len(texts):
        raise RuntimeError(f"gateway {name} answered {status}: {str(body)[:500]}")
    if not all(
        isinstance(p, dict)
        and isinstance(p.get("entities"), list)
        and isinstance(p.get("fields"), dict)
        for p in preds
    ):
        raise RuntimeError(f"gateway {name}: answers lack entities/fields: {preds[:1]}")
    return preds


def measure_mixed(
    gen: LoadGenerator,
    procs: Processes,
    st: Setup,
    tmp: Path,
    texts: dict[str, list[str]],
    *,
    sizes: Sequence[int],
    rounds: int,
    seconds: float,
    warm_s: float,
) -> dict[str, Any]:
    """Texts/s of one gateway serving a classifier (SOLO) and an extractor (EXTRACTOR):
    all requests to the classifier, all to the extractor, and each request to one of the two
    at random (50/50), each specialist with its own texts (``texts``: "classifier" and
    "extractor"); c=16, per request size in ``sizes``, in rounds whose order alternates.

    Answers are checked against each specialist's in-process answer (AdapterHost.predict on
    the registered versions): CHECK_TEXTS texts each before and after the load, and one
    response in CHECK_EVERY of every run under load (all three loads keep them, so that the
    load generator does the same work on each side).
    """
    from lifecycle.config.settings import Settings

    load_before = list(os.getloadavg())
    oracle = Oracle.from_registry(st.home, [SOLO, EXTRACTOR])
    gw = start_gateway(procs, st, tmp, label="gateway-mixed")
    before, loaded = Tally(), Tally()

    def check_answers(tally: Tally, start: int, where: str) -> None:
        cl = texts["classifier"][start : start + CHECK_TEXTS]
        labels, confidences = check_gateway(gw, SOLO, cl)
        oracle.compare(tally, SOLO, cl, labels, confidences, where=where)
        ex = texts["extractor"][start : start + CHECK_TEXTS]
        oracle.compare_entities(
            tally, EXTRACTOR, ex, check_extractor(gw, EXTRACTOR, ex), where=where
        )

    check_answers(before, 0, "before load")
    path = {
        "classifier": f"/v1/specialists/{SOLO}/predict",
        "extractor": f"/v1/specialists/{EXTRACTOR}/predict",
    }
    folder = tmp / "bodies-mixed"
    folder.mkdir(exist_ok=True)
    bodies: dict[tuple[str, int], Path] = {}
    for n in sizes:
        for kind in ("classifier", "extractor"):
            bodies[(kind, n)] = folder / f"{kind}-{n}.txt"
            write_bodies(
                bodies[(kind, n)], texts[kind], per_request=n, paths=[path[kind]], make=gateway_body
            )
        bodies[("mixed", n)] = folder / f"mixed-{n}.txt"
        lines = mixed_lines(
            {path[k]: texts[k] for k in ("classifier", "extractor")},
            per_request=n,
            make=gateway_body,
        )
        bodies[("mixed", n)].write_text("\n".join(lines) + "\n", encoding="utf-8")
    warm(gen, gw, bodies[("mixed", min(sizes))], warm_s)
    log(
        f"part 7: classifier alone, extractor alone, mixed 50/50 on one gateway ({rounds}"
        f" rounds, alternating order): {', '.join(str(n) for n in sizes)} text(s)/request,"
        f" c=16; one answer in {CHECK_EVERY} checked against its specialist's in-process one"
    )
    traffic_url = Settings(home=st.home).traffic_url
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    answered = kept = 0
    kept_by_kind = dict.fromkeys(MIXED_KINDS, 0)
    for r in range(1, rounds + 1):
        order = MIXED_KINDS if r % 2 else MIXED_KINDS[::-1]
        row: dict[str, Any] = {"round": r, "order": list(order)}
        for n in sizes:
            for kind in order:
                record = tmp / f"answers-mixed-{kind}-{n}-r{r}.jsonl"
                point = Point(f"mixed-part {kind} r{r}", n, 16)
                measured = measure(
                    gen, gw, bodies[(kind, n)], point, seconds=seconds, record=record
                )
                points.append(measured)
                row[f"{kind}_{n}"] = measured["texts_per_s"]
                row[f"{kind}_{n}_errors"] = measured["non_2xx"] + measured["socket_errors"]
                row[f"{kind}_{n}_mean_batch"] = measured.get("gateway", {}).get("mean_batch_texts")
                # Answers are texts: a kept response of n texts holds n of them.
                answered += n * max(0, measured["requests"] - measured["non_2xx"])
                drain(gw)  # the answers' rows must be in the traffic store before the lookup
                got = check_recorded(record, oracle, traffic_url, loaded, where=point.target)
                kept += got
                kept_by_kind[kind] += got
            slower = min(row[f"classifier_{n}"], row[f"extractor_{n}"])
            row[f"ratio_{n}"] = ratio(row[f"mixed_{n}"], slower)
            log(
                f"  round {r}, {n} text(s)/request: mixed {row[f'mixed_{n}']:.1f} / slower alone"
                f" {slower:.1f} = {row[f'ratio_{n}'] or float('nan'):.3f}"
            )
        rows.append(row)
    check_answers(before, CHECK_TEXTS, "after load")
    procs.stop(gw.proc)
    log(
        f"part 7 answers: before/after {before.checked} checked, {before.mismatches} mismatches;"
        f" under load {loaded.checked} of {answered} answers checked, {loaded.mismatches}"
        f" mismatches, {loaded.unverifiable} unverifiable, {loaded.ties} near-ties;"
        f" largest confidence gap {loaded.max_confidence_gap:.1e}"
    )
    return {
        "classifier": SOLO,
        "extractor": EXTRACTOR,
        "connections": 16,
        "texts_per_request": list(sizes),
        "texts": {kind: len(found) for kind, found in texts.items()},
        "rounds": rows,
        "gateway_ready_seconds": gw.ready_seconds,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "answers": {
            "check_every": CHECK_EVERY,
            "confidence_tolerance": CONFIDENCE_TOLERANCE,
            "answered_under_load": answered,
            "kept_under_load": kept,
            "kept_by_load": kept_by_kind,
            "under_load": loaded.as_dict(),
            "before_and_after_load": before.as_dict(),
        },
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

    # Parts 6 and 7 alone serve one classifier: registering and loading nine is wasted time.
    names = [SOLO] if args.only in ("ood", "mixed", "int8") else [*MIX, SHADOWED]
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

    def mixed_part() -> None:
        st_mixed, extractor = add_extractor(st, tmp, args.snips, train_rows=args.extractor_rows)
        results["setup"]["extractor"] = extractor
        ex_texts = snips_texts(args.snips)
        results["texts"]["extractor"] = {
            "source": str(args.snips / "test.jsonl"),
            "n": len(ex_texts),
        }
        mixed_result = measure_mixed(
            gen,
            procs,
            st_mixed,
            tmp,
            {"classifier": texts, "extractor": ex_texts},
            sizes=(16, 1),
            rounds=rounds,
            seconds=dur,
            warm_s=warm_s,
        )
        points.extend(mixed_result.pop("points"))
        results["mixed"] = mixed_result

    def int8_part() -> None:
        found = measure_int8(
            gen,
            procs,
            st,
            tmp,
            texts,
            {16: sixteen, 1: one},
            data=args.data,
            rounds=rounds,
            seconds=dur,
            warm_s=warm_s,
            quick=quick,
            champion_epochs=0 if quick else args.int8_epochs,
        )
        points.extend(found.pop("points"))
        results["int8"] = found

    if args.only == "ood":
        out_of_scope_part()
        return
    if args.only == "mixed":
        mixed_part()
        return
    if args.only == "int8":
        int8_part()
        return

    # Every served adapter's own answers, in process: the reference each server's are held to.
    oracle = Oracle.from_registry(st.home, [*MIX, SHADOWED])
    results["setup"]["weights"] = st.weights
    results["setup"]["distinct"] = distinct_answers(oracle, MIX, texts[:64])
    before_load = Tally()
    loaded = Tally()

    limit = measure_limit(st, texts, quick=quick)
    results["limit"] = limit

    # -- 3a. mlflow models serve, started now so that it runs beside the gateway -------------
    log("mlflow models serve: logging the adapter as a models-from-code pyfunc")
    started = time.perf_counter()
    st.pyfunc_uri = log_pyfunc(st)
    results["mlflow"] = {"model_uri": st.pyfunc_uri, "log_seconds": time.perf_counter() - started}
    # The peer at its defaults (one worker, torch on every core) and at two workers of one
    # thread each; each round takes the faster as the peer's figure.
    ml_workers = (1, 2)
    mls = {w: start_mlflow(procs, st, tmp, workers=w) for w in ml_workers}
    ml_one = bodies / "mlflow-1.txt"
    write_bodies(ml_one, texts, per_request=1, paths=["/invocations"], make=mlflow_body)
    check = texts[:CHECK_TEXTS]
    for w, ml in mls.items():
        results["mlflow"][f"ready_seconds_w{w}"] = ml.ready_seconds
        labels, confidences = check_mlflow(ml, check)
        oracle.compare(before_load, SOLO, check, labels, confidences, where=ml.name)
        # Long enough at c=16 that both workers of the two-worker server have run requests.
        warm(gen, ml, ml_one, warm_s)

    # -- 2, 4, 5: the gateway, with its defaults --------------------------------------------
    from lifecycle.config.settings import Settings

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
        labels, confidences = check_gateway(gw, name, check)
        oracle.compare(before_load, name, check, labels, confidences, where="gateway")
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
        f"paired rounds ({rounds}): the limit's two ways again, gateway 16 texts/request"
        f" c={c16}, 1 text/request c={c1} and c=16, mlflow models serve c=16 with"
        f" {' and '.join(str(w) for w in ml_workers)} worker(s)"
    )
    paired: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        lim = limit_round(texts, limit)
        row: dict[str, Any] = {
            "round": r,
            "limit": lim["best"],
            "limit_one_worker": lim["one"],
            "limit_two_workers": lim["two"],
        }
        row.update(c16=c16, c1=c1)
        runs = [
            ("sixteen", gw, sixteen, Point(f"gateway r{r}", 16, c16)),
            ("one", gw, one, Point(f"gateway r{r}", 1, c1)),
            ("one_c16", gw, one, Point(f"gateway r{r}", 1, 16)),
        ]
        runs += [
            (f"mlflow_c16_w{w}", ml, ml_one, Point(f"mlflow-models-serve-w{w} r{r}", 1, 16))
            for w, ml in mls.items()
        ]
        for key, server, requests, point in runs:
            measured = measure(gen, server, requests, point, seconds=dur)
            points.append(measured)
            row[key] = measured["texts_per_s"]
        best_w = max(ml_workers, key=lambda w: row[f"mlflow_c16_w{w}"])
        row["mlflow_c16"] = row[f"mlflow_c16_w{best_w}"]
        row["mlflow_best_workers"] = best_w
        paired.append(row)
    results["paired"] = paired

    log(
        f"8 adapters mixed vs 1 adapter, 1 text/request, c=16 ({rounds} rounds, alternating);"
        f" one answer in {CHECK_EVERY} checked against its adapter's in-process answer"
    )
    singles: list[dict[str, Any]] = []
    mixes: list[dict[str, Any]] = []
    answered = kept = 0
    for r in range(1, rounds + 1):
        for key, requests, target in (
            ("one", one, "gateway-1-adapter"),
            ("mixed", mixed, "gateway-8-adapters-mixed"),
        ):
            record = tmp / f"answers-{key}-r{r}.jsonl"
            measured = measure(gen, gw, requests, Point(target, 1, 16), seconds=dur, record=record)
            (singles if key == "one" else mixes).append(measured)
            answered += max(0, measured["requests"] - measured["non_2xx"])
            # The answers' rows must be in the traffic store before they are looked up.
            drain(gw)
            kept += check_recorded(
                record, oracle, Settings(home=st.home).traffic_url, loaded, where=target
            )
    points += singles + mixes
    log(
        f"answers under load: {loaded.checked} of {answered} checked, {loaded.mismatches}"
        f" mismatches, {loaded.unverifiable} unverifiable, {loaded.ties} near-ties;"
        f" largest confidence gap {loaded.max_confidence_gap:.1e}"
    )
    results["adapters"] = {
        "rounds": rounds,
        "one_texts_per_s": [p["texts_per_s"] for p in singles],
        "eight_mixed_texts_per_s": [p["texts_per_s"] for p in mixes],
        "one_p50_ms": [p["p50_ms"] for p in singles],
        "eight_mixed_p50_ms": [p["p50_ms"] for p in mixes],
    }
    results["answers"] = {
        "check_every": CHECK_EVERY,
        "confidence_tolerance": CONFIDENCE_TOLERANCE,
        "tie": TIE,
        "answered_under_load": answered,
        "kept_under_load": kept,
        "under_load": loaded.as_dict(),
        "before_load": before_load.as_dict(),
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
    for w, ml in mls.items():
        for c in [1, 4] if not quick else [4]:
            point = Point(f"mlflow-models-serve-w{w}", 1, c)
            points.append(measure(gen, ml, ml_one, point, seconds=dur))
        procs.stop(ml.proc)

    # -- 2b. the same gateway without batching --------------------------------------------------
    log("gateway without batching: LIFECYCLE_MAX_BATCH_SIZE=1")
    gw1 = start_gateway(
        procs, st, tmp, label="gateway-batch1", extra={"LIFECYCLE_MAX_BATCH_SIZE": "1"}
    )
    labels, confidences = check_gateway(gw1, SOLO, check)
    oracle.compare(before_load, SOLO, check, labels, confidences, where=gw1.name)
    results["answers"]["before_load"] = before_load.as_dict()
    warm(gen, gw1, one, warm_s)
    points.append(measure(gen, gw1, one, Point("gateway-batch-of-one", 1, 16), seconds=dur))
    procs.stop(gw1.proc)

    # -- 6. the out-of-scope score on vs off ----------------------------------------------------
    out_of_scope_part()

    # -- 7. an extractor and a classifier on one gateway, mixed ---------------------------------
    mixed_part()

    # -- 8. int8 linear layers against float32 --------------------------------------------------
    int8_part()


# -- 8. int8 linear layers against float32 (LIFECYCLE_QUANTIZE) --

QUANTIZE_ENV = "LIFECYCLE_QUANTIZE"
#: The runtimes part 8 compares, in the order odd rounds measure them.
RUNTIMES = ("fp32", "int8")


def _runtime_hosts(st: Setup, texts: list[str]) -> dict[str, dict[str, list[tuple[Any, str]]]]:
    """Per runtime, SOLO's champion on one host (every core) and on two (one thread each),
    loaded and warmed before any clock starts."""
    import torch

    from lifecycle.config.settings import Settings
    from lifecycle.model.host import AdapterHost
    from lifecycle.model.int8 import QuantizeMode
    from lifecycle.registry.models import Registry

    registry = Registry(Settings(home=st.home))
    out: dict[str, dict[str, list[tuple[Any, str]]]] = {}
    before = torch.get_num_threads()
    for runtime in RUNTIMES:
        quantize: QuantizeMode = "int8" if runtime == "int8" else "off"
        out[runtime] = {}
        for way, count, threads in (("one", 1, before), ("two", 2, 1)):
            torch.set_num_threads(threads)
            hosts = []
            for _ in range(count):
                host = AdapterHost("minilm", quantize=quantize)
                if host.runtime != runtime:
                    raise RuntimeError(f"a {quantize} host runs {host.runtime}, not {runtime}")
                adapter_id, _ = registry.load(host, SOLO, "champion")
                host.logits_and_embeddings(texts[:64], adapter_id, batch_size=64)
                hosts.append((host, adapter_id))
            out[runtime][way] = hosts
    torch.set_num_threads(before)
    return out


def _limit_pass(hosts: list[tuple[Any, str]], texts: list[str], batch_size: int) -> float:
    """Texts/s of sorted batches of ``batch_size`` over ``hosts``: one host on every core, or
    one thread per host with one torch thread each."""
    import threading

    import torch

    ordered = sorted(texts, key=len)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    before = torch.get_num_threads()
    if len(hosts) > 1:
        torch.set_num_threads(1)

    def run(k: int) -> None:
        host, adapter_id = hosts[k]
        for batch in batches[k :: len(hosts)]:
            host.logits_and_embeddings(batch, adapter_id, batch_size=batch_size)

    started = time.perf_counter()
    try:
        if len(hosts) == 1:
            run(0)
        else:
            threads = [threading.Thread(target=run, args=(k,)) for k in range(len(hosts))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        torch.set_num_threads(before)
    return len(texts) / (time.perf_counter() - started)


def int8_accuracy(
    pair: dict[str, tuple[Any, str]], data: Path, reference: list[str], *, what: str
) -> dict[str, Any]:
    """Banking77 test accuracy of one specialist with float32 and with int8 linear layers
    (``pair``: runtime -> (host, adapter id)), the two's label agreement there, and on the
    version's reference rows (what ``auto`` decides on)."""
    from lifecycle.training.data import load_table

    test = load_table(data / "test.csv", label_column="category")
    texts, truth = test["text"].astype(str).tolist(), test["label"].astype(str).tolist()
    labels: dict[str, list[str]] = {}
    for runtime in RUNTIMES:
        host, adapter_id = pair[runtime]
        labels[runtime] = [p.label for p in host.predict(texts, adapter_id, batch_size=64)]
    accuracy = {
        r: sum(a == b for a, b in zip(labels[r], truth, strict=True)) / len(truth) for r in RUNTIMES
    }
    same = sum(a == b for a, b in zip(labels["fp32"], labels["int8"], strict=True)) / len(truth)
    host, adapter_id = pair["int8"]
    on_reference = host.int8_agreement(adapter_id, reference)
    out = {
        "specialist": what,
        "test_texts": len(texts),
        "accuracy_fp32": accuracy["fp32"],
        "accuracy_int8": accuracy["int8"],
        "loss_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
        "agreement_test": same,
        "agreement_reference": on_reference,
        "reference_rows": len(reference),
    }
    log(
        f"int8 ({what}): Banking77 test accuracy {accuracy['fp32']:.4f} float32,"
        f" {accuracy['int8']:.4f} int8 (loss {out['loss_points']:.2f} points); labels agree on"
        f" {same:.2%} of {len(texts)} test texts and {on_reference:.2%} of {len(reference)}"
        " reference rows"
    )
    return out


def int8_champion(
    st: Setup, data: Path, tmp: Path, *, epochs: int
) -> tuple[dict[str, Any], Any, dict[str, tuple[Any, str]]]:
    """A Banking77 specialist trained as a user would (every training row, ``epochs`` epochs)
    and registered in ``st``'s registry as ``banking77`` v1: its test accuracy with float32
    and int8 linear layers, its spec and its float32 and int8 hosts. The quick adapter the
    servers run is too weak (near-ties everywhere) to say what int8 costs a specialist worth
    serving, and its reference (~100 rows) too small to show drift."""
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec, TrainingSpec
    from lifecycle.model.host import AdapterHost
    from lifecycle.registry.models import Registry
    from lifecycle.training.data import load_table
    from lifecycle.training.train import train_specialist

    train = load_table(data / "train.csv", label_column="category")
    spec = SpecialistSpec(
        name="banking77",
        training=TrainingSpec(
            epochs=epochs, evals_per_epoch=1, validation_fraction=0.1, max_length=64, batch_size=32
        ),
    )
    log(f"int8: training a Banking77 specialist, {epochs} epoch(s) on {len(train)} rows")
    started = time.perf_counter()
    result = train_specialist(spec, train, progress=False)
    seconds = time.perf_counter() - started
    registry = Registry(Settings(home=st.home))
    version = registry.log_training(spec, result, trigger="initial")
    registry.set_alias(spec.name, "champion", version.version)
    pair = {}
    for runtime in RUNTIMES:
        host = AdapterHost("minilm", quantize="int8" if runtime == "int8" else "off")
        pair[runtime] = (host, registry.load(host, spec.name, "champion")[0])
    reference = result.validation_predictions["text"].astype(str).tolist()[:512]
    found = int8_accuracy(pair, data, reference, what=f"banking77, {epochs} epochs")
    found["train_seconds"] = seconds
    return found, spec, pair


def int8_drift(
    st: Setup, spec: Any, served: tuple[Any, str], data: Path, rows: int
) -> dict[str, Any]:
    """The monitors' verdict on a stationary window (Banking77 test texts, labels hidden) served
    with int8 (``served``: an int8 host and the adapter id of ``spec``'s champion; no spec:
    SOLO's), against the version's float32 reference and against it scored in int8."""
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.registry.models import Registry
    from lifecycle.training.data import load_table
    from monitors.check import assess, load_reference

    if spec is None:
        spec = next(x for x in load_specialists(st.specialists_file).specialists if x.name == SOLO)
    registry = Registry(Settings(home=st.home))
    version = registry.resolve(spec.name, "champion")
    test = load_table(data / "test.csv", label_column="category").sample(n=rows, random_state=SEED)
    host, adapter_id = served
    preds = host.predict(test["text"].astype(str).tolist(), adapter_id, batch_size=64)
    window = pd.DataFrame(
        {
            "text": test["text"].to_numpy(),
            "label": [p.label for p in preds],
            "confidence": [p.confidence for p in preds],
            "embedding": [p.embedding for p in preds],
            "true_label": None,
            "true_label_source": None,
        }
    )
    out: dict[str, Any] = {"window_rows": rows, "specialist": spec.name}
    for runtime in RUNTIMES:
        settings = Settings(home=st.home, quantize="int8" if runtime == "int8" else "off")
        reference = load_reference(registry, spec, version, settings=settings)
        if reference.runtime != runtime:
            raise RuntimeError(f"the {runtime} reference came out {reference.runtime}")
        verdict = assess(spec, reference, window, report=False)
        signals = {
            s.name: {"score": s.score, "threshold": s.threshold, "drifted": s.drifted}
            for s in verdict.signals
        }
        out[f"reference_{runtime}"] = {
            "status": verdict.status.value,
            "drifted": list(verdict.drifted),
            "signals": signals,
        }
        log(
            f"int8: stationary window served in int8 against a {runtime} reference: "
            f"{verdict.status.value}, drifted {list(verdict.drifted) or 'none'}"
        )
    return out


def measure_int8(
    gen: LoadGenerator,
    procs: Processes,
    st: Setup,
    tmp: Path,
    texts: list[str],
    bodies: dict[int, Path],
    *,
    data: Path,
    rounds: int,
    seconds: float,
    warm_s: float,
    quick: bool,
    champion_epochs: int,
) -> dict[str, Any]:
    """Int8 against float32: the in-process limit of each (the better of one worker and two
    per round), the gateway of each at 16 and 1 text(s)/request (c=16), and `mlflow models
    serve` at its best beside them, in paired rounds whose order alternates; Banking77 test
    accuracy of the quick adapter and (``champion_epochs`` > 0) of a specialist trained on all
    of Banking77; the monitors' verdict on a stationary window."""
    from lifecycle.config.settings import Settings
    from lifecycle.registry.models import Registry

    sample = texts[:1000] if quick else texts[:2000]
    hosts = _runtime_hosts(st, sample)
    registry = Registry(Settings(home=st.home))
    reference_texts = registry.reference(SOLO, "champion")[0]["text"].astype(str).tolist()
    served = {runtime: hosts[runtime]["one"][0] for runtime in RUNTIMES}
    accuracy = int8_accuracy(served, data, reference_texts[:512], what=f"{SOLO} (quick)")
    # The drift check needs a registered version with a reference worth the name: the trained
    # specialist's when there is one, else the quick adapter's.
    watched: tuple[Any, Any] = (None, served["int8"])
    if champion_epochs:
        found, spec, pair = int8_champion(st, data, tmp, epochs=champion_epochs)
        accuracy = {"quick": accuracy, **found}
        watched = (spec, pair["int8"])
    servers = {
        runtime: start_gateway(
            procs,
            st,
            tmp,
            label=f"gateway-{runtime}",
            extra={QUANTIZE_ENV: "int8" if runtime == "int8" else "off"},
        )
        for runtime in RUNTIMES
    }
    check = texts[:CHECK_TEXTS]
    answers: dict[str, Any] = {}
    for runtime, server in servers.items():
        status, ready = http("GET", f"{server.base_url}/readyz")
        if not isinstance(ready, dict) or ready.get("runtime") != runtime:
            raise RuntimeError(f"gateway-{runtime} reports runtime {ready!r} ({status})")
        labels, _ = check_gateway(server, SOLO, check)
        host, adapter_id = hosts[runtime]["one"][0]
        own = [p.label for p in host.predict(check, adapter_id)]
        answers[runtime] = sum(a == b for a, b in zip(labels, own, strict=True))
    log(
        f"int8: of {len(check)} texts, each gateway's labels equal its runtime's in-process "
        f"ones: {answers}"
    )
    if not st.pyfunc_uri:
        st.pyfunc_uri = log_pyfunc(st)
    ml_body = tmp / "bodies" / "int8-mlflow-1.txt"
    write_bodies(ml_body, texts, per_request=1, paths=["/invocations"], make=mlflow_body)
    mls = {w: start_mlflow(procs, st, tmp, workers=w) for w in (1, 2)}
    for server in [*servers.values(), *mls.values()]:
        warm(gen, server, ml_body if server.name.startswith("mlflow") else bodies[1], warm_s)
    log(
        f"int8 vs float32 ({rounds} rounds): limit, gateway 16 and 1 text(s)/request c=16, "
        "mlflow models serve (1 and 2 workers) c=16"
    )
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        order = RUNTIMES if r % 2 else RUNTIMES[::-1]
        row: dict[str, Any] = {"round": r, "first": order[0]}
        for runtime in order:
            ways = {way: _limit_pass(h, sample, 64) for way, h in hosts[runtime].items()}
            row[f"limit_{runtime}"] = max(ways.values())
            row[f"limit_{runtime}_ways"] = ways
        for runtime in order:
            for per_request, requests in bodies.items():
                point = Point(f"gateway-{runtime} r{r}", per_request, 16)
                measured = measure(gen, servers[runtime], requests, point, seconds=seconds)
                points.append(measured)
                row[f"{runtime}_{per_request}"] = measured["texts_per_s"]
                row[f"{runtime}_{per_request}_errors"] = (
                    measured["non_2xx"] + measured["socket_errors"]
                )
        for w, ml in mls.items():
            point = Point(f"mlflow-models-serve-w{w} r{r}", 1, 16)
            measured = measure(gen, ml, ml_body, point, seconds=seconds)
            points.append(measured)
            row[f"mlflow_w{w}"] = measured["texts_per_s"]
        row["mlflow_best"] = max(row["mlflow_w1"], row["mlflow_w2"])
        log(
            f"int8 round {r}: limit {row['limit_int8']:.0f}/{row['limit_fp32']:.0f}, gateway 16"
            f" {row['int8_16']:.0f}/{row['fp32_16']:.0f}, 1 {row['int8_1']:.0f}/{row['fp32_1']:.0f}"
            f" texts/s (int8/float32); mlflow at best {row['mlflow_best']:.0f}"
        )
        rows.append(row)
    for server in [*servers.values(), *mls.values()]:
        procs.stop(server.proc)
    drift = int8_drift(st, *watched, data, rows=500 if quick else 1000)
    return {
        "setting": QUANTIZE_ENV,
        "connections": 16,
        "texts_per_request": list(bodies),
        "limit_texts": len(sample),
        "accuracy": accuracy,
        "answers_equal_in_process": answers,
        "answers_checked": len(check),
        "drift": drift,
        "rounds": rows,
        "points": points,
    }


def median_ratio(tops: list[float], bottoms: list[float]) -> float | None:
    """The median of the per-round ratios of two figures measured side by side."""
    ratios = [r for a, b in zip(tops, bottoms, strict=True) if (r := ratio(a, b)) is not None]
    return statistics.median(ratios) if ratios else None


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    paired = results.get("paired", [])
    adapters = results.get("adapters", {})
    shadow = results.get("shadow", {})
    ood = results.get("ood", {}).get("rounds", [])
    mixed = results.get("mixed", {})

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
    if paired and "mlflow_best_workers" in paired[0]:
        ml_detail += (
            " (peer's workers: "
            + ", ".join(str(row["mlflow_best_workers"]) for row in paired)
            + ")"
        )
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

    def mixed_row(per_request: int) -> tuple[str, str, float | None, str, float, str]:
        found = [row for row in mixed.get("rounds", []) if f"mixed_{per_request}" in row]
        both = col(found, f"mixed_{per_request}")
        slower = [
            min(row[f"classifier_{per_request}"], row[f"extractor_{per_request}"]) for row in found
        ]
        errors = sum(row.get(f"{k}_{per_request}_errors", 0) for row in found for k in MIXED_KINDS)
        detail = "; ".join(
            f"{row[f'mixed_{per_request}']:.0f}/min({row[f'classifier_{per_request}']:.0f},"
            f"{row[f'extractor_{per_request}']:.0f})"
            for row in found
        )
        return (
            "mixed",
            f"extractor + classifier mixed / slower alone, {per_request} text"
            f"{'s' * (per_request > 1)}/request, c=16",
            median_ratio(both, slower),
            ">=",
            0.8,
            detail + " texts/s" + (f" ERRORS {errors}" if errors else ""),
        )

    def mixed_answers() -> tuple[int | None, str]:
        answers = mixed.get("answers", {})
        loaded, around = answers.get("under_load"), answers.get("before_and_after_load", {})
        if not loaded:
            return None, ""
        answered = answers["answered_under_load"]
        share = loaded["checked"] / answered if answered else 0.0
        faults = (
            loaded["mismatches"]
            + loaded["unverifiable"]
            + around.get("mismatches", 0)
            + around.get("unverifiable", 0)
            + int(share < 0.05)  # too small a sample proves nothing
        )
        return faults, (
            f"{loaded['checked']} of {answered} answers under load ({share:.1%}),"
            f" {around.get('checked', 0)} before and after; mismatches {loaded['mismatches']}"
            f" + {around.get('mismatches', 0)}, unverifiable {loaded['unverifiable']},"
            f" near-ties {loaded['ties']}, max confidence gap {loaded['max_confidence_gap']:.1e}"
        )

    answers = results.get("answers", {})
    loaded = answers.get("under_load", {})
    before = answers.get("before_load", {})
    faults: int | None = None
    answers_detail = ""
    if loaded:
        answered = answers["answered_under_load"]
        share = loaded["checked"] / answered if answered else 0.0
        faults = (
            loaded["mismatches"]
            + loaded["unverifiable"]
            + before.get("mismatches", 0)
            + before.get("unverifiable", 0)
        )
        # Too small a sample proves nothing: it fails the floor as a mismatch would.
        if share < 0.05:
            faults += 1
        answers_detail = (
            f"{loaded['checked']} of {answered} answers under load ({share:.1%}), "
            f"{before.get('checked', 0)} before;"
            f" mismatches {loaded['mismatches']} + {before.get('mismatches', 0)},"
            f" unverifiable {loaded['unverifiable']}, near-ties {loaded['ties']},"
            f" max confidence gap {loaded['max_confidence_gap']:.1e}"
        )

    mixed_faults, mixed_detail = mixed_answers()
    rows = [
        (
            "main",
            "answers != own adapter's in-process answer (8 adapters)",
            faults,
            "<=",
            0,
            answers_detail,
        ),
        (
            "main",
            "gateway / limit, 16 texts/request, best concurrency",
            g16,
            ">=",
            0.75,
            g16_detail + (f" (c={c16})" if c16 else ""),
        ),
        ("main", "gateway / limit, 1 text/request, best concurrency", g1, ">=", 0.5, g1_detail),
        (
            "main",
            "gateway / mlflow models serve at best, 1 text/request, c=16",
            ml,
            ">=",
            2.0,
            ml_detail,
        ),
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
        (
            "mixed",
            "extractor + classifier answers != in-process ones",
            mixed_faults,
            "<=",
            0,
            mixed_detail,
        ),
        mixed_row(16),
        mixed_row(1),
        *int8_rows(results.get("int8", {}), rounds),
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


def int8_rows(
    found: dict[str, Any], pairs: Any
) -> list[tuple[str, str, float | None, str, float, str]]:
    """Part 8's floors (issue #17): int8 past the float32 limit, at no cost in answers;
    ``pairs`` writes a floor's per-round figures."""
    rows = found.get("rounds", [])

    def col(key: str) -> list[float]:
        return [row[key] for row in rows]

    def errors(*keys: str) -> str:
        n = sum(row.get(f"{k}_errors", 0) for row in rows for k in keys)
        return f" ERRORS {n}" if n else ""

    accuracy = found.get("accuracy", {})
    drift = found.get("drift", {})
    int8_ref, fp32_ref = drift.get("reference_int8", {}), drift.get("reference_fp32", {})
    alarms = None if not int8_ref else int(int8_ref["status"] != "OK")
    return [
        (
            "int8",
            "int8 limit / float32 limit (in process, best of 1 and 2 workers)",
            median_ratio(col("limit_int8"), col("limit_fp32")),
            ">=",
            1.6,
            pairs(col("limit_int8"), col("limit_fp32"), "texts/s"),
        ),
        (
            "int8",
            "gateway int8 / gateway float32, 16 texts/request, c=16",
            median_ratio(col("int8_16"), col("fp32_16")),
            ">=",
            1.5,
            pairs(col("int8_16"), col("fp32_16"), "texts/s") + errors("int8_16", "fp32_16"),
        ),
        (
            "int8",
            "gateway int8 / mlflow models serve at best, 1 text/request, c=16",
            median_ratio(col("int8_1"), col("mlflow_best")),
            ">=",
            3.0,
            pairs(col("int8_1"), col("mlflow_best"), "texts/s") + errors("int8_1"),
        ),
        (
            "int8",
            "Banking77 test accuracy lost to int8, points",
            accuracy.get("loss_points"),
            "<=",
            0.5,
            (
                f"{accuracy['accuracy_fp32']:.4f} -> {accuracy['accuracy_int8']:.4f} on"
                f" {accuracy['test_texts']} texts; labels agree on {accuracy['agreement_test']:.2%}"
                f" (reference rows {accuracy['agreement_reference']:.2%})"
            )
            if accuracy
            else "",
        ),
        (
            "int8",
            "stationary window served int8, int8-scored reference: alarms",
            alarms,
            "<=",
            0,
            (
                f"{int8_ref['status']} (drifted {int8_ref['drifted'] or 'none'}); against the"
                f" float32 reference {fp32_ref.get('status')} (drifted"
                f" {fp32_ref.get('drifted') or 'none'})"
            )
            if int8_ref
            else "",
        ),
    ]


def failed_floors(checks: list[dict[str, Any]]) -> list[str]:
    """The checks whose floor failed or could not be judged (n/a): any fails the run (exit
    1), so that the bench can gate a change."""
    return [v["check"] for v in checks if v["pass"] is not True]


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
    distinct = results.get("setup", {}).get("distinct")
    if distinct:
        print(
            f"adapters: {distinct['adapters']} with different weights (1 trained, the rest derived"
            f" by seed); on {distinct['texts']} texts every pair differs in >="
            f" {distinct['min_label_differ']:.0%} of labels and >="
            f" {distinct['min_confidence_differ']:.0%} of confidences"
        )
    answers = results.get("answers")
    if answers:
        for when in ("before_load", "under_load"):
            tally = answers[when]
            print(
                f"answers {when.replace('_', ' ')} vs each adapter's in-process answer:"
                f" {tally['checked']} checked, {tally['mismatches']} mismatches,"
                f" {tally['unverifiable']} unverifiable, {tally['ties']} near-ties"
                + "".join(f"\n  {example}" for example in tally["examples"])
            )
    ood = results.get("ood")
    if ood:
        print(
            f"out-of-scope score: {ood['setting']} true vs false; detector"
            f" {ood['detector'].get('method')}; {ood['answers_checked']} answers per side checked"
            " before and after the load (a float ood_score on, None off); labels on vs off: "
            + ("the same" if ood["same_labels"] else "DIFFER")
        )
    mixed = results.get("mixed")
    if mixed:
        extractor = results.get("setup", {}).get("extractor", {})
        print(
            f"extractor + classifier: {mixed['classifier']} (Banking77) and {mixed['extractor']}"
            f" (SNIPS, {extractor.get('entity_labels', '?')} entity labels, trained on"
            f" {extractor.get('train_rows', '?')} rows) on one gateway, c={mixed['connections']};"
            f" load average {mixed['load_average_before'][0]:.2f} before,"
            f" {mixed['load_average_after'][0]:.2f} after"
        )
        print(
            f"  {'round':<6}{'txt/req':>8}{'classifier':>12}{'extractor':>11}{'mixed':>9}"
            f"{'ratio':>8}   mean batch (classifier/extractor/mixed)"
        )
        for row in mixed["rounds"]:
            for n in mixed["texts_per_request"]:
                batches = "/".join(
                    "-"
                    if row.get(f"{k}_{n}_mean_batch") is None
                    else f"{row[f'{k}_{n}_mean_batch']:.1f}"
                    for k in MIXED_KINDS
                )
                value = row.get(f"ratio_{n}")
                print(
                    f"  {row['round']:<6}{n:>8}{row[f'classifier_{n}']:>12.1f}"
                    f"{row[f'extractor_{n}']:>11.1f}{row[f'mixed_{n}']:>9.1f}"
                    f"{'n/a' if value is None else format(value, '.3f'):>8}   {batches}"
                )
        for when in ("before_and_after_load", "under_load"):
            tally = mixed["answers"][when]
            print(
                f"  answers {when.replace('_', ' ')} vs the in-process ones: {tally['checked']}"
                f" checked, {tally['mismatches']} mismatches, {tally['unverifiable']}"
                f" unverifiable, {tally['ties']} near-ties"
                + "".join(f"\n    {example}" for example in tally["examples"])
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
    print(f"{'check':<60}{'ratio':>8}  {'floor':<8}{'result':<7} detail")
    for v in results.get("verdicts", []):
        value = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}"
        if isinstance(v["ratio"], int):
            value = str(v["ratio"])
        verdict = "n/a" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        print(f"{v['check']:<60}{value:>8}  {v['op']} {v['floor']:<5}{verdict:<7} {v['detail']}")
    if results.get("error"):
        print(f"\nINCOMPLETE: {results['error']}")


def run_reporting(
    body: Any, args: argparse.Namespace, results: dict[str, Any], procs: Any, tmp: Path
) -> int:
    """Run ``body(args, results, procs, tmp)``; on any error record it in ``results`` and
    return 1 (what was measured so far is still reported); always stop the processes."""
    try:
        body(args, results, procs, tmp)
        return 0
    except BaseException as exc:  # report what was measured, then stop everything
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"stopped early: {results['error']}")
        if not isinstance(exc, (KeyboardInterrupt, RuntimeError)):
            import traceback

            traceback.print_exc()
        return 1
    finally:
        procs.stop_all()


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
        choices=["ood", "mixed", "int8"],
        default=None,
        help="Run one part alone: ood = the out-of-scope score on vs off (part 6); mixed ="
        " an extractor and a classifier on one gateway, mixed vs each alone (part 7); int8 ="
        " int8 linear layers vs float32: limit, gateway, accuracy, drift (part 8).",
    )
    parser.add_argument(
        "--snips", type=Path, default=snips_default(), help="SNIPS (part 7's extractor)."
    )
    parser.add_argument(
        "--extractor-rows", type=int, default=1000, help="SNIPS rows part 7's extractor learns."
    )
    parser.add_argument(
        "--int8-epochs",
        type=int,
        default=2,
        help="Epochs of the Banking77 specialist part 8 measures int8's accuracy cost on, trained"
        " on every training row (0: only the quick adapter's; --quick: 0).",
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
    if args.only in (None, "mixed") and not (args.snips / "train.jsonl").is_file():
        parser.error(f"{args.snips / 'train.jsonl'} not found; pass --snips")
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
    code = run_reporting(run, args, results, procs, tmp)
    results["seconds"] = time.perf_counter() - started
    results["verdicts"] = verdicts(results)
    failed = failed_floors(results["verdicts"])
    results["failed_floors"] = failed
    if failed:
        code = 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report(results)
    if failed:
        print(f"\nFLOORS NOT MET ({len(failed)}): " + "; ".join(failed))
    print(f"\nwrote {args.out} in {results['seconds']:.0f} s")
    if args.keep or code:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
