"""Keeps the gateway's routes in step with the registry's aliases, with no downtime.

A swap loads the new version next to the old one, then replaces the route in
one assignment: requests already batched finish on the old adapter, new ones
go to the new. Retired adapters are unloaded a grace period later. When the
registry cannot be reached, the gateway keeps serving what it has and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import LifecycleError
from lifecycle.serving.engine import ModelEngine, Route, Served

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class SyncState:
    registry_up: bool = False
    last_ok: float = 0.0
    last_error: str | None = None
    swaps: int = 0
    #: Specialists declared but not servable (never trained, or their champion failed to load).
    unavailable: dict[str, str] = field(default_factory=dict)


class RegistrySync:
    """Polls aliases (and answers reload calls) and swaps adapters in the engine."""

    def __init__(
        self,
        engine: ModelEngine,
        registry_factory: Any,
        specialists: Sequence[str],
        *,
        poll_s: float = 10.0,
        retire_after_s: float = 5.0,
        tasks: Mapping[str, str] | None = None,
        probe_rows: int = 0,
    ) -> None:
        self.engine = engine
        #: Reference rows of each version its int8 agreement is probed on at load (0: none;
        #: the gateway sets it under quantize=auto).
        self.probe_rows = probe_rows
        #: Each specialist's task in the specialists file: a version of the other kind is
        #: refused at load (its head answers another question).
        self.tasks = dict(tasks or {})
        self._registry_factory = registry_factory
        self._registry: Any = None
        self.specialists = list(specialists)
        self.poll_s = poll_s
        self.retire_after_s = retire_after_s
        self.state = SyncState()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        #: Called after every poll: periodic work that must stay off the request path (the
        #: gateway's figures from the traffic store). A hook that raises is logged, not fatal.
        self.after_sync: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[None]] = set()
        #: (specialist, version) -> its reference_shares, read on first use and kept.
        self._shares: dict[tuple[str, int], dict[str, float]] = {}

    async def start(self) -> None:
        await self.sync()
        if self.poll_s > 0:
            self._task = asyncio.create_task(self._poll(), name="registry-sync")

    def add_after_sync(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` now, in the background (start-up does not wait on it), and after
        every poll."""
        self.after_sync.append(hook)
        task = asyncio.create_task(self._run_hook(hook), name="after-sync")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in [self._task, *self._retiring, *self._background]:
            if task is not None:
                task.cancel()

    async def sync(self) -> dict[str, Any]:
        """Bring every route in line with the registry now; returns what changed."""
        async with self._lock:
            changes: dict[str, Any] = {}
            try:
                aliases = await asyncio.to_thread(self._read_aliases)
            except Exception as exc:  # unreachable, timing out, misconfigured: keep serving
                self.state.registry_up = False
                self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                logger.warning(
                    "registry unreachable, serving what is loaded: %s", self.state.last_error
                )
                return {"error": self.state.last_error}
            self.state.registry_up = True
            self.state.last_ok = time.time()
            self.state.last_error = None
            for name in self.specialists:
                try:
                    change = await self._sync_one(name, aliases.get(name))
                except LifecycleError as exc:
                    logger.error("cannot serve %s: %s", name, exc)
                    if name not in self.engine.routes:
                        self.state.unavailable[name] = str(exc)
                    change = {"error": str(exc)}
                except Exception as exc:  # a registry hiccup mid-download: keep what we have
                    self.state.registry_up = False
                    self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    change = {"error": self.state.last_error}
                if change:
                    changes[name] = change
            return changes

    # -- internals --------------------------------------------------------------

    def _registry_client(self) -> Any:
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    def _read_aliases(self) -> dict[str, dict[str, int] | None]:
        registry = self._registry_client()
        return {
            name: (registry.aliases(name) if registry.has_model(name) else None)
            for name in self.specialists
        }

    async def _sync_one(self, name: str, aliases: dict[str, int] | None) -> dict[str, Any]:
        current = self.engine.routes.get(name)
        if not aliases or CHAMPION not in aliases:
            if current is None:
                self.state.unavailable[name] = "no version has the alias 'champion' yet"
            return {}
        champion_v = aliases[CHAMPION]
        challenger_v = aliases.get(CHALLENGER)
        if challenger_v == champion_v:
            challenger_v = None
        have_champion = current.champion.version if current else None
        have_challenger = current.challenger.version if current and current.challenger else None
        if champion_v == have_champion and challenger_v == have_challenger:
            return {}
        champion = await self._ensure_loaded(name, champion_v, current)
        challenger = None
        challenger_error = None
        if challenger_v is not None:
            try:
                challenger = await self._ensure_loaded(name, challenger_v, current)
            except Exception as exc:
                # A broken or unreachable challenger costs its shadow, never the champion's
                # answers; the next sync tries it again (the artifact may be fixed or replaced).
                challenger_error = (
                    f"challenger v{challenger_v} not loaded: {type(exc).__name__}: {exc}"[:300]
                )
                logger.error("%s: %s", name, challenger_error)
        if (
            current is not None
            and champion.version == have_champion
            and challenger is None
            and have_challenger is None
        ):
            return {"error": challenger_error} if challenger_error else {}
        self.engine.routes[name] = Route(specialist=name, champion=champion, challenger=challenger)
        self.state.unavailable.pop(name, None)
        self.state.swaps += 1
        logger.info(
            "%s now served by v%d%s",
            name,
            champion.version,
            f" (shadow v{challenger.version})" if challenger else "",
        )
        in_use = {champion.adapter_id} | ({challenger.adapter_id} if challenger else set())
        if current is not None:
            old = {current.champion.adapter_id} | (
                {current.challenger.adapter_id} if current.challenger else set()
            )
            for adapter_id in old - in_use:
                self._retire(adapter_id)
        change: dict[str, Any] = {
            "champion": champion.version,
            "challenger": challenger.version if challenger else None,
        }
        if challenger_error:
            change["error"] = challenger_error
        return change

    async def _ensure_loaded(self, name: str, version: int, current: Route | None) -> Served:
        if current is not None:
            for served in (current.champion, current.challenger):
                if served is not None and served.version == version:
                    return served
        adapter_id = f"{name}@v{version}"
        if self.engine.has_adapter(adapter_id):
            meta = self.engine.meta(adapter_id)
            return Served(version=version, adapter_id=adapter_id, labels=meta.labels)
        registry = self._registry_client()
        # Download off the model thread (I/O), load on it (peft state).
        _, folder = await asyncio.to_thread(registry.download, name, version)
        self._check_task(name, version, folder)
        probe = None
        if self.probe_rows > 0:
            frame = await asyncio.to_thread(self._reference_rows, registry, name, version)
            if frame is not None:
                probe = [str(t) for t in frame["text"].head(self.probe_rows)]
                # The surge baseline comes from the same rows: no second download for it.
                self._remember_shares(name, version, frame)
        meta = await self.engine.load_adapter(adapter_id, folder, probe_texts=probe)
        return Served(version=version, adapter_id=adapter_id, labels=tuple(meta.labels))

    async def reference_shares(self, name: str, version: int) -> dict[str, float] | None:
        """Each label's share of the version's answers on its reference rows (the label-request
        queue's baseline for surges), read once (with the load's probe rows when probing is
        on); None while the registry cannot give it (not kept: the next call tries again)."""
        key = (name, version)
        if key not in self._shares:
            frame = await asyncio.to_thread(
                self._reference_rows, self._registry_client(), name, version
            )
            if frame is not None:
                self._remember_shares(name, version, frame)
        return self._shares.get(key)

    def _remember_shares(self, name: str, version: int, frame: pd.DataFrame) -> None:
        from lifecycle.labels.requests import reference_shares

        shares = reference_shares(frame)
        if shares is not None:
            self._shares[(name, version)] = shares

    def _reference_rows(self, registry: Any, name: str, version: int) -> pd.DataFrame | None:
        """The version's reference rows, or None (logged) where the registry cannot give them:
        the load then counts the version as not probed, and the surge baseline is tried
        again at the next call."""
        try:
            return registry.reference_rows(name, version)
        except Exception as exc:
            logger.warning("no reference rows for %s v%d: %s", name, version, exc)
            return None

    def _check_task(self, name: str, version: int, folder: Any) -> None:
        from lifecycle.config.errors import ModelLoadError
        from lifecycle.model.adapters import check_artifact

        expected = self.tasks.get(name)
        found = check_artifact(folder).task
        if expected is not None and found != expected:
            raise ModelLoadError(
                f"{name} v{version} is a model for task {found}, but the specialists file declares "
                f"{name} with task: {expected}; register a {expected} version or fix the file"
            )

    def _retire(self, adapter_id: str) -> None:
        async def later() -> None:
            await asyncio.sleep(self.retire_after_s)
            if any(
                adapter_id
                in (r.champion.adapter_id, r.challenger.adapter_id if r.challenger else "")
                for r in self.engine.routes.values()
            ):
                return
            if self.engine.has_adapter(adapter_id):
                await self.engine.remove_adapter(adapter_id)
                logger.info("unloaded retired adapter %s", adapter_id)

        task = asyncio.create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync()
            except Exception:  # never let the poller die
                logger.exception("registry sync failed")
            for hook in self.after_sync:
                await self._run_hook(hook)

    async def _run_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except Exception:  # never let the poller die
            logger.exception("after-sync hook failed")
