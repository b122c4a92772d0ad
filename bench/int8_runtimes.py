"""Which int8 runtime for the CPU serving path: measured side by side in one run.

The base encoder (``load_base("minilm", device="cpu")``) embeds the first ``--texts`` (768)
Banking77 test texts, sorted by length, in batches of 64 padded to each batch's longest
(max_length 128), mean-pooled over the attention mask, on one thread by default. Each variant
gets one warm-up pass and ``--passes`` (3) timed passes; the passes run round-robin over the
variants, so load from other jobs on the machine falls on all of them alike. The variants:

- ``torch fp32``: the reference;
- ``torch int8 7-bit``: torch's own dynamic int8 (``quantize_dynamic`` with per-channel qint8
  weights), which quantizes activations on 7 bits (``reduce_range``) on x86;
- ``shipped int8``: ``lifecycle.model.int8.Int8Linears`` on the same encoder, the same weights
  as the row above but activations on all 8 bits; switched on for its passes and off after,
  so every later fp32 pass doubles as a check that switching off gives float back bit for bit;
- ``ORT fp32`` / ``ORT int8``: the encoder exported to ONNX (opset 17, TorchScript exporter)
  on ONNX Runtime's CPU provider, and that model through ``quantize_dynamic`` (QInt8,
  per-channel weights).

Per variant: texts/s (best pass), the ratio over torch fp32, and the min and mean cosine of
its pooled embeddings against torch fp32's. A table is printed and JSON written (``--out``).

ONNX Runtime is optional and no project dependency: ``pip install onnxruntime onnx`` into the
venv, or ``--ort-site PATH`` to use a ``pip install --target PATH`` folder. Without it the ORT
rows say "not installed" and the run still passes.

    .venv/bin/python bench/int8_runtimes.py [--ort-site PATH] [--no-ort] [--quick]
        [--texts 768] [--passes 3] [--threads 1] [--data DIR] [--out FILE]

``--quick`` (64 texts, one pass) is the smoke run of tests/bench/test_int8_runtimes.py; its
speeds are not to be quoted.

Exit 1 when an answer check fails: the shipped variant's worst cosine under 0.97, any int8
variant's mean cosine under 0.95, ORT fp32's worst cosine under 0.999 (a broken export), an
fp32 pass that differs from the first by one bit, or ONNX Runtime present but failing. Speed is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
MAX_LENGTH = 128
QUICK_TEXTS = 64
QUICK_PASSES = 1
#: The shipped path's bar: bench/RESULTS.md measured a worst cosine of 0.986 on this set.
SHIPPED_MIN_COSINE = 0.97
#: Any int8 path: a mean under this moves labels, whatever the speed.
INT8_MEAN_COSINE = 0.95
#: ORT fp32 runs the same float arithmetic in another order; less means the export is wrong,
#: and the ORT int8 row built on it would be measuring something else.
ORT_FP32_MIN_COSINE = 0.999

Batch = dict[str, Any]


@dataclass
class Row:
    """One variant: how to run it, and what it measured."""

    key: str
    label: str
    run: Callable[[], Any] | None = field(default=None, repr=False)
    status: str = "ok"
    note: str = ""
    best_s: float = math.inf
    texts_per_s: float | None = None
    ratio: float | None = None
    cos_min: float | None = None
    cos_mean: float | None = None
    embeddings: Any = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "status": self.status,
            "note": self.note,
            "texts_per_s": self.texts_per_s,
            "ratio_vs_torch_fp32": self.ratio,
            "cos_min": self.cos_min,
            "cos_mean": self.cos_mean,
        }


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def default_data() -> Path:
    for candidate in (
        ROOT.parent / "shared" / "data" / "banking77",
        Path("/work/shared/data/banking77"),
    ):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "data" / "banking77"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Banking77 folder")
    parser.add_argument("--texts", type=int, default=768)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "int8_runtimes_results.json")
    parser.add_argument("--ort-site", type=Path, help="a pip --target folder holding onnxruntime")
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime rows")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} texts, one pass")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.passes = min(args.texts, QUICK_TEXTS), QUICK_PASSES
    if args.texts < 1 or args.passes < 1 or args.threads < 1:
        parser.error("--texts, --passes and --threads must be at least 1")
    return args


def read_texts(data: Path, count: int) -> list[str]:
    with (data / "test.csv").open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:count]
    # Sorted by length, as the gateway batches: padding then costs little, and the int8 gain
    # is measured on the arithmetic rather than on pad tokens.
    return sorted(texts, key=len)


def tokenize(tokenizer: Any, texts: list[str]) -> list[Batch]:
    batches = []
    for start in range(0, len(texts), BATCH):
        encoded = tokenizer(
            texts[start : start + BATCH],
            padding="longest",
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        batches.append(dict(encoded))
    return batches


def mean_pool(hidden: Any, mask: Any) -> Any:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def torch_runner(encoder: Any, batches: list[Batch]) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        with torch.inference_mode():
            return torch.cat(
                [
                    mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
                    for batch in batches
                ]
            )

    return run


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    # torch 2.13 announces the quantized tensor types' removal; the pin holds it at 2.13.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def torch_int8_7bit(encoder: Any) -> tuple[Any, int]:
    """A copy of ``encoder`` through torch's own dynamic quantization, and its layer count."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # Per-channel symmetric qint8 weights, as Int8Linears packs them: the two rows then differ
    # only in the activations' range (7 bits here, 8 shipped).
    with quiet_quantization():
        quantized = quantize_dynamic(
            encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=False
        )
    count = sum(isinstance(m, DynamicLinear) for m in quantized.modules())
    return quantized, count


def shipped_runner(int8: Any, fp32: Callable[[], Any]) -> Callable[[], Any]:
    """Int8 for this pass only: the encoder is the fp32 row's too, as one host shares it."""

    def run() -> Any:
        int8.on = True
        try:
            with quiet_quantization():
                return fp32()
        finally:
            int8.on = False

    return run


def import_ort(site: Path | None) -> tuple[Any, Any, str]:
    """(onnxruntime, onnx, "") or (None, None, why not)."""
    if site is not None:
        # Appended: the venv's own numpy and protobuf keep priority over the folder's copies.
        sys.path.append(str(site.resolve()))
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        return None, None, f"not installed ({exc})"
    return onnxruntime, onnx, ""


def ort_rows(
    encoder: Any, batches: list[Batch], threads: int, workdir: Path, ort: Any, onnx: Any
) -> list[Row]:
    """ORT fp32 and int8 rows; a row that cannot be built says why in its status."""
    import torch

    fp32 = Row("ort_fp32", "ORT fp32")
    int8 = Row("ort_int8", "ORT int8 per-channel")
    rows = [fp32, int8]
    fp32_path, int8_path = workdir / "minilm_fp32.onnx", workdir / "minilm_int8.onnx"
    names: list[str] = [
        name for name in ("input_ids", "attention_mask", "token_type_ids") if name in batches[0]
    ]

    class LastHidden(torch.nn.Module):
        # The exporter takes positional tensors and one output; the encoder takes keywords.
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    sample = batches[len(batches) // 2]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHidden(encoder).eval(),
                tuple(sample[name] for name in names),
                str(fp32_path),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(fp32_path))
    except Exception as exc:
        for row in rows:
            row.status = f"error: export failed: {exc!r}"[:300]
        return rows

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        # quantize_dynamic advises a pre-processing step on the root logger at every call;
        # that step's symbolic shape inference fails on this export, and it changes no speed.
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                str(fp32_path),
                str(int8_path),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=False,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.setLevel(level)
    except Exception as exc:
        int8.status = f"error: quantize_dynamic failed: {exc!r}"[:300]

    feeds = [{name: batch[name].numpy() for name in names} for batch in batches]
    masks = [batch["attention_mask"] for batch in batches]
    for row, path in ((fp32, fp32_path), (int8, int8_path)):
        if row.status != "ok":
            continue
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            row.status = f"error: session failed: {exc!r}"[:300]
            continue
        row.run = ort_runner(session, feeds, masks)
        if row is int8:
            ops = [node.op_type for node in onnx.load(str(path)).graph.node]
            row.note = f"{ops.count('MatMulInteger')} MatMulInteger"
    fp32.note = f"onnxruntime {ort.__version__}, opset 17"
    return rows


def ort_runner(session: Any, feeds: list[dict[str, Any]], masks: list[Any]) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        # Pooled by the same torch code as the torch rows: only the encoder's pass differs.
        return torch.cat(
            [
                mean_pool(torch.from_numpy(session.run(None, feed)[0]), mask)
                for feed, mask in zip(feeds, masks, strict=True)
            ]
        )

    return run


def cosines(embeddings: Any, reference: Any) -> tuple[float, float]:
    import torch

    similarity = torch.nn.functional.cosine_similarity(
        embeddings.double(), reference.double(), dim=1
    )
    return float(similarity.min()), float(similarity.mean())


def measure(rows: list[Row], passes: int, texts: int, fp32_passes: list[Any]) -> None:
    """Warm-up, then the timed passes round-robin; fp32's outputs go to ``fp32_passes``."""
    live = [row for row in rows if row.run is not None]
    for row in live:
        assert row.run is not None
        log(f"warm-up: {row.label}")
        row.embeddings = row.run()
    for number in range(1, passes + 1):
        for row in live:
            assert row.run is not None
            start = time.perf_counter()
            out = row.run()
            elapsed = time.perf_counter() - start
            row.best_s = min(row.best_s, elapsed)
            if row.key == "torch_fp32":
                fp32_passes.append(out)
            log(f"pass {number}/{passes}: {row.label}: {texts / elapsed:.1f} texts/s")
    reference = rows[0].embeddings
    for row in live:
        row.texts_per_s = texts / row.best_s
        row.cos_min, row.cos_mean = cosines(row.embeddings, reference)
    for row in live:
        row.ratio = (row.texts_per_s or 0.0) / (rows[0].texts_per_s or math.nan)


def run_checks(rows: dict[str, Row], fp32_identical: bool, fp32_detail: str) -> list[Check]:
    import torch

    checks = [
        Check(
            "fp32 passes bit-identical after shipped int8 switched off", fp32_identical, fp32_detail
        )
    ]
    shipped = rows["shipped_int8"]
    checks.append(
        Check(
            f"shipped int8 cos min >= {SHIPPED_MIN_COSINE}",
            shipped.cos_min is not None and shipped.cos_min >= SHIPPED_MIN_COSINE,
            f"{shipped.cos_min}",
        )
    )
    reference = rows["torch_fp32"].embeddings
    for key in ("torch_int8_7bit", "shipped_int8", "ort_int8"):
        row = rows[key]
        if row.embeddings is None:
            continue  # not installed, skipped, or an error that the "ran" check reports
        checks.append(
            Check(
                f"{row.label} cos mean >= {INT8_MEAN_COSINE}",
                row.cos_mean is not None and row.cos_mean >= INT8_MEAN_COSINE,
                f"{row.cos_mean}",
            )
        )
        # A switch that quietly left the float path in place would pass every bar above and
        # report float's speed as int8's.
        checks.append(
            Check(
                f"{row.label} differs from fp32 (int8 arithmetic ran)",
                not torch.equal(row.embeddings, reference),
                f"{row.note}",
            )
        )
    ort_fp32 = rows["ort_fp32"]
    if ort_fp32.cos_min is not None:
        checks.append(
            Check(
                f"ORT fp32 cos min >= {ORT_FP32_MIN_COSINE} (export matches torch)",
                ort_fp32.cos_min >= ORT_FP32_MIN_COSINE,
                f"{ort_fp32.cos_min}",
            )
        )
    for row in rows.values():
        if row.status.startswith("error"):
            checks.append(Check(f"{row.label} ran", False, row.status))
        elif row.status == "ok":
            speed = row.texts_per_s
            ok = speed is not None and math.isfinite(speed) and speed > 0
            checks.append(Check(f"{row.label} measured a speed", ok, f"{speed}"))
    return checks


def fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if value is None else format(value, spec)


def print_table(rows: list[Row], header: str) -> None:
    print(f"\n{header}")
    print(f"{'variant':22} {'texts/s':>8} {'x fp32':>7} {'cos min':>8} {'cos mean':>9}  note")
    for row in rows:
        note = row.note if row.status == "ok" else row.status
        print(
            f"{row.label:22} {fmt(row.texts_per_s, '8.1f')} {fmt(row.ratio, '7.2f')} "
            f"{fmt(row.cos_min, '8.5f')} {fmt(row.cos_mean, '9.6f')}  {note}"
        )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()

    import torch
    import transformers

    from lifecycle.model.base import load_base
    from lifecycle.model.int8 import Int8Linears

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # settable once, before any parallel work
        torch.set_num_interop_threads(1)
    base = load_base("minilm", device="cpu", threads=args.threads)
    texts = read_texts(args.data, args.texts)
    batches = tokenize(base.tokenizer, texts)
    lengths = [int(batch["input_ids"].shape[1]) for batch in batches]
    log(f"{len(texts)} texts, {len(batches)} batches, padded lengths {lengths}")

    fp32_run = torch_runner(base.encoder, batches)
    fp32 = Row("torch_fp32", "torch fp32", run=fp32_run)
    # Built before Int8Linears touches the encoder: quantize_dynamic copies it as it stands.
    quantized, count = torch_int8_7bit(base.encoder)
    seven = Row(
        "torch_int8_7bit",
        "torch int8 7-bit",
        run=torch_runner(quantized, batches),
        note=f"{count} layers, quantize_dynamic, reduce_range on {torch.backends.quantized.engine}",
    )
    int8 = Int8Linears(base.encoder)
    shipped = Row(
        "shipped_int8",
        "shipped int8 (8-bit)",
        run=shipped_runner(int8, fp32_run),
        note=f"{len(int8)} layers, lifecycle.model.int8.Int8Linears",
    )
    rows = [fp32, seven, shipped]

    versions: dict[str, str | None] = {"onnxruntime": None, "onnx": None}
    with tempfile.TemporaryDirectory(prefix="int8_runtimes_") as tmp:
        if args.no_ort:
            rows += [Row("ort_fp32", "ORT fp32", status="skipped (--no-ort)")]
            rows += [Row("ort_int8", "ORT int8 per-channel", status="skipped (--no-ort)")]
        else:
            ort, onnx, why = import_ort(args.ort_site)
            if ort is None:
                rows += [Row("ort_fp32", "ORT fp32", status=why)]
                rows += [Row("ort_int8", "ORT int8 per-channel", status=why)]
            else:
                versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
                log(f"exporting to ONNX and quantizing (onnxruntime {ort.__version__})")
                rows += ort_rows(base.encoder, batches, args.threads, Path(tmp), ort, onnx)
        fp32_passes: list[Any] = []
        measure(rows, args.passes, len(texts), fp32_passes)

    # The fp32 row's first output came before any int8 pass; every timed one after shipped's
    # passes switched int8 off again. One more after the whole run, with int8 certainly off.
    assert not int8.on
    fp32_passes.append(fp32_run())
    identical = all(torch.equal(out, fp32.embeddings) for out in fp32_passes)
    detail = f"{len(fp32_passes)} recomputations vs the warm-up pass"

    by_key = {row.key: row for row in rows}
    checks = run_checks(by_key, identical, detail)
    load_end = os.getloadavg()
    header = (
        f"{len(texts)} Banking77 texts, batch {BATCH}, {args.threads} thread(s), best of "
        f"{args.passes}; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
    )
    print_table(rows, header)
    print()
    for check in checks:
        print(f"{'ok    ' if check.passed else 'FAILED'} {check.name}: {check.detail}")
    passed = all(check.passed for check in checks)
    print("all checks passed" if passed else "some checks FAILED")

    report = {
        "benchmark": "int8_runtimes",
        "settings": {
            "texts": len(texts),
            "batch": BATCH,
            "max_length": MAX_LENGTH,
            "padded_lengths": lengths,
            "passes": args.passes,
            "threads": args.threads,
            "quick": args.quick,
            "data": str(args.data),
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            **versions,
            "quantized_engine": torch.backends.quantized.engine,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpus": os.cpu_count(),
        },
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "rows": {row.key: row.as_json() for row in rows},
        "checks": [vars(check) for check in checks],
        "passed": passed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
