"""What every flow run needs: settings, the specialist's spec, the store, the registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore


@dataclass
class Context:
    settings: Settings
    spec: SpecialistSpec
    store: TrafficStore
    registry: Registry

    def alert(self, kind: str, verdict: str, summary: str, **fields: Any) -> None:
        """Tell on-call (webhooks, and the traffic store) about a step of the loop."""
        from lifecycle.notify.alerter import Alerter
        from lifecycle.notify.message import AlertMessage

        message = AlertMessage(
            specialist=self.spec.name, kind=kind, verdict=verdict, summary=summary, **fields
        )
        Alerter(self.settings, self.store).notify(message)


@contextmanager
def context(specialist: str, **overrides: Any) -> Iterator[Context]:
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

    settings = load_settings(**overrides)
    spec = load_specialists(settings.specialists_file).get(specialist)
    store = TrafficStore(settings.traffic_url)
    store.upgrade()
    try:
        yield Context(settings, spec, store, Registry(settings))
    finally:
        store.dispose()
