"""Extraction specialists: pull labelled character spans (entities, slots) out of a text.

The second task kind beside classification. Spans are ``{"label", "start", "end", "text"}``
dicts in data frames (character offsets, ``end`` exclusive) and ``(label, start, end)``
tuples in metrics, so that two spans are the same exactly when their tuples are equal.
"""
