"""The ``lifecycle`` command line: the app object, its shared options and helpers.

Start-up stays fast: each command imports the heavy libraries it needs inside
its own body. Errors a user can fix print one line and exit with status 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import typer

from lifecycle.config.errors import LifecycleError

app = typer.Typer(
    name="lifecycle",
    help=(
        "Keep task-specific LoRA specialists good in production: train and register them in "
        "MLflow, serve them, watch their traffic for drift, retrain, shadow, promote, "
        "roll back.\n\n"
        "State lives under LIFECYCLE_HOME (default ./.lifecycle); MLflow is at MLFLOW_TRACKING_URI "
        "(default: a sqlite db there). Specialists are declared in specialists.yaml."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown: docstring lines wrapped in the source join into paragraphs in --help.
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])

SpecialistsFileOption = typer.Option(
    None,
    "--file",
    "-f",
    help="Specialists YAML file (default: LIFECYCLE_SPECIALISTS_FILE or specialists.yaml).",
)


def _friendly(func: F) -> F:
    """Print a LifecycleError as one line on stderr and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LifecycleError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _context(specialists_file: Path | None) -> tuple[Any, Any]:
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists

    settings = load_settings(specialists_file=specialists_file)
    return settings, load_specialists(settings.specialists_file)


def _open_store(settings: Any) -> Any:
    """The traffic store; an error naming it when it does not exist yet."""
    url = settings.traffic_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise LifecycleError(f"no traffic store at {url} yet: serve some traffic first")
    from lifecycle.store import TrafficStore

    return TrafficStore(url)


def _prefect_env(settings: Any) -> None:
    """Prefect reads its settings at import: point it at our home before the first import."""
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _parse_time(text: str | None, option: str) -> Any:
    if text is None:
        return None
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO time: {text!r}", param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _served_versions(settings: Any, name: str) -> dict[str, Any]:
    """The champion's (and challenger's) version and labels, from the registry."""
    from lifecycle.registry.models import Registry

    registry = Registry(settings)
    aliases = registry.aliases(name) if registry.has_model(name) else {}
    if "champion" not in aliases:
        raise LifecycleError(f"{name} has no champion yet; train one first (lifecycle train)")
    out: dict[str, Any] = {"labels": {}}
    for alias in ("champion", "challenger"):
        if alias in aliases:
            info = registry.get_version(name, aliases[alias])
            out[alias] = info.version
            out["labels"][alias] = json.loads(info.lineage.get("labels", "[]") or "[]")
    return out
