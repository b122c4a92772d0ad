"""What every drift scenario's stream is built from, whatever the task kind.

A classifier's scenarios (:mod:`lifecycle.synthetic.scenarios`) and an extractor's
(:mod:`lifecycle.synthetic.extraction_scenarios`) draw their parts from seeds derived the same
way and lay out their streams the same way (phase, then arrival step); both use these so a
scenario of either kind reads alike and a seed means the same in both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    import pandas as pd


def derive_seed(seed: int, part: str) -> int:
    """A seed for one part of a scenario, stable across runs and Python versions."""
    digest = hashlib.sha256(f"{seed}/{part}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shuffle_together(frames: list[pd.DataFrame], *, seed: int) -> pd.DataFrame:
    """The frames' rows in one random order (a fresh 0..n-1 index, shuffled with them)."""
    import numpy as np
    import pandas as pd

    joined = pd.concat(frames, ignore_index=True)
    return joined.iloc[np.random.default_rng(seed).permutation(len(joined))]


def phased_stream(before: pd.DataFrame, after: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The stream of a scenario: ``columns`` of the rows before the onset, then after, with
    ``phase`` ("before"/"after") and ``step`` (0..n-1, arrival order)."""
    import pandas as pd

    stream = pd.concat(
        [before[columns].assign(phase="before"), after[columns].assign(phase="after")],
        ignore_index=True,
    )
    stream["step"] = range(len(stream))
    return stream


def check_counts(**counts: int) -> None:
    """Refuse a negative row count, naming it (in the order given)."""
    for what, value in counts.items():
        if value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")


@dataclass(frozen=True, eq=False)
class StreamScenario:
    """What a scenario of every kind holds: a reference set to train on and a stream of
    traffic with a change at ``onset``.

    ``stream`` has the kind's ``columns``, phase ("before"/"after") and step (0..n-1, arrival
    order); ``stream.phase[onset]`` is the first "after" row. ``eq=False``: frames do not
    compare to a single bool, so scenarios compare by identity.
    """

    #: The columns of the reference and of the stream (besides phase and step), per kind.
    columns: ClassVar[tuple[str, ...]] = ()

    name: str
    description: str
    reference: pd.DataFrame
    stream: pd.DataFrame
    onset: int

    @classmethod
    def build(
        cls,
        name: str,
        description: str,
        reference: pd.DataFrame,
        before: pd.DataFrame,
        after: pd.DataFrame,
        **kind_fields: Any,
    ) -> Self:
        """The scenario of the rows before and after its onset; ``kind_fields`` are the
        subclass's own fields."""
        columns = list(cls.columns)
        return cls(
            name=name,
            description=description,
            reference=reference[columns].reset_index(drop=True),
            stream=phased_stream(before, after, columns),
            onset=len(before),
            **kind_fields,
        )
