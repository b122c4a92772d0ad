"""Text descriptors that work offline: length, word count, and the share of words the
model's own tokenizer does not know as a whole.

Evidently's ``OOVWordsPercentage`` needs nltk corpora from the network; the model's
vocabulary is the better yardstick anyway: a word it must split into pieces is a word its
pretraining saw rarely, and a rising share of those is what a new channel or new product
names look like to the model.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from functools import lru_cache

import numpy as np
import pandas as pd

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: Word-start markers of BPE / SentencePiece vocabularies (GPT-2 style, T5 style).
_WORD_PREFIXES = ("", "Ġ", "▁")


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits."""
    return _WORD.findall(text.lower())


def oov_share(text: str, vocabulary: Collection[str]) -> float:
    """Share of ``text``'s words absent from ``vocabulary`` as whole words (0 for no words)."""
    found = words(text)
    if not found:
        return 0.0
    unknown = sum(1 for w in found if not any(p + w in vocabulary for p in _WORD_PREFIXES))
    return unknown / len(found)


def describe(texts: Iterable[str | None], vocabulary: Collection[str]) -> pd.DataFrame:
    """Columns text_length (characters), word_count and oov_share, one row per text.

    A missing text (None or NaN, e.g. a store that keeps hashes only) gives NaN descriptors,
    which the drift step drops rather than counting as empty.
    """
    rows: list[tuple[float, float, float]] = []
    for text in texts:
        if not isinstance(text, str):
            rows.append((np.nan, np.nan, np.nan))
            continue
        found = words(text)
        rows.append((float(len(text)), float(len(found)), oov_share(text, vocabulary)))
    return pd.DataFrame(rows, columns=["text_length", "word_count", "oov_share"], dtype=float)


@lru_cache(maxsize=4)
def tokenizer_vocabulary(base_model: str) -> frozenset[str]:
    """The whole-word vocabulary of a base model's tokenizer (loaded once per process)."""
    from transformers import AutoTokenizer

    from lifecycle.model.base import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model))
    # WordPiece continuation pieces ("##ing") are not words.
    return frozenset(t for t in tokenizer.get_vocab() if not t.startswith("##"))
