"""The request path's side of the traffic store: waiting until records are durable, and
reads run off the event loop. A store that fails either way is a ``StoreError``: the
gateway answers 503, since the call itself was fine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from lifecycle.config.errors import StoreError
from lifecycle.serving.state import Gateway

T = TypeVar("T")

#: What a client is told when a read its call needs fails (the cause may name the database).
STORE_UNREADABLE = "the traffic store cannot be read right now"


async def commit(gw: Gateway, seq: int) -> None:
    """Wait until what was just accepted is on disk (traffic_durability), before answering."""
    if gw.settings.traffic_durability == "memory":
        return
    try:
        await asyncio.to_thread(gw.writer.commit, seq)
    except StoreError as exc:
        # The records stay queued for the database, but the client is not told "stored".
        raise StoreError(f"the traffic log cannot be written: {exc}") from exc


async def read_store(
    read: Callable[..., T],
    *args: Any,
    failures: tuple[type[Exception], ...] = (Exception,),
    message: str = STORE_UNREADABLE,
    **kwargs: Any,
) -> T:
    """``read(*args, **kwargs)`` on a worker thread; any of ``failures`` is a ``StoreError``
    with ``message``."""
    try:
        return await asyncio.to_thread(read, *args, **kwargs)
    except failures as exc:
        raise StoreError(message) from exc


async def read_store_once_migrated(
    gw: Gateway, read: Callable[..., T], *args: Any, default: T, **kwargs: Any
) -> T:
    """A read that feedback needs: ``default`` while the writer has not created the tables yet
    (nothing is stored then, every request is still in flight), else as ``read_store``."""
    try:
        return await read_store(
            read, *args, message=f"{STORE_UNREADABLE}; send the label again later", **kwargs
        )
    except StoreError:
        if getattr(gw.writer, "migrated", True):
            raise
        return default
