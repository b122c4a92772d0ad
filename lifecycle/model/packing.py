"""Padding-free inference: several texts share one row of a forward pass.

On a CPU the encoder's cost grows with every position of a batch, padding
included, and short support queries of mixed length waste most of a padded
batch (Banking77: 15 tokens on average, up to 80). Packing lays the texts of a
pass end to end in rows of at most ``budget`` tokens; a block-diagonal
attention mask keeps each text to its own tokens and position ids restart at
each text, so every text gets exactly the hidden states it would get alone.
The rows are padded only to the longest row, which first-fit decreasing keeps
close to the budget.

The planning is pure; the tensor helpers import torch when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def plan_rows(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``budget`` tokens.

    First-fit decreasing: longest first, each into the first row with room. A text
    longer than the budget gets a row of its own (the budget is a target, never a
    reason to cut a text).
    """
    if budget < 1:
        raise ValueError("budget must be at least 1 token")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        for r, left in enumerate(room):
            if n <= left:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(budget - n)
    return rows


@dataclass(frozen=True)
class Packed:
    """The tensors of one packed pass.

    ``segment`` holds, per position, the index of the text it belongs to, or a
    negative number for padding (each padding position its own, so that it attends
    only to itself and the softmax never sees an empty row).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor  # bool, (rows, 1, length, length): True = may attend
    segment: torch.Tensor


def pack(token_ids: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], pad_id: int) -> Packed:
    """Lay out ``token_ids`` (one list per text) in the given rows."""
    import torch

    length = max(sum(len(token_ids[i]) for i in row) for row in rows)
    ids = [[pad_id] * length for _ in rows]
    positions = [[0] * length for _ in rows]
    segment = [[-(k + 1) for k in range(length)] for _ in rows]
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(token_ids[i])
            ids[r][at : at + n] = token_ids[i]
            positions[r][at : at + n] = range(n)
            segment[r][at : at + n] = [i] * n
            at += n
    seg = torch.tensor(segment, dtype=torch.long)
    return Packed(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
        attention_mask=(seg[:, :, None] == seg[:, None, :])[:, None],
        segment=seg,
    )


def segment_means(hidden: torch.Tensor, segment: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of each text's hidden states: (rows, length, dim) -> (count, dim)."""
    import torch

    flat = hidden.reshape(-1, hidden.shape[-1])
    seg = segment.reshape(-1).to(hidden.device)
    keep = seg >= 0
    index = seg[keep]
    sums = torch.zeros(count, flat.shape[-1], dtype=flat.dtype, device=flat.device)
    sums.index_add_(0, index, flat[keep])
    tokens = torch.zeros(count, dtype=flat.dtype, device=flat.device)
    tokens.index_add_(0, index, torch.ones_like(index, dtype=flat.dtype))
    return sums / tokens.clamp(min=1.0)[:, None]
