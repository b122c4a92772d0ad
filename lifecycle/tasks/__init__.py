"""Task kinds: what differs between a classifier and an extractor, behind one interface.

A specialist's ``task`` names its kind. The kinds differ in their head (one row per label
over the pooled text, or one row per BIO tag over every word piece), in how logits become an
answer, in the training targets and loss, and in the per-request score the gate compares;
everything else (the base model, LoRA adapters, batching, the store, the registry, the
loop) is shared. A new kind is one module here with a ``KIND`` object.
"""

from __future__ import annotations

from lifecycle.tasks.base import Answer, Reading, TaskKind


def task_kind(name: str) -> TaskKind:
    """The kind called ``name`` (``classification`` or ``extraction``)."""
    if name == "classification":
        from lifecycle.tasks.classification import KIND

        return KIND
    if name == "extraction":
        from lifecycle.tasks.extraction import KIND as EXTRACTION

        return EXTRACTION
    raise ValueError(f"unknown task {name!r}; known: classification, extraction")


__all__ = ["Answer", "Reading", "TaskKind", "task_kind"]
