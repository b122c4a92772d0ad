"""Schema migrations of the traffic store, run from code: users need no ``alembic.ini``.

``upgrade(url)`` brings any traffic database (empty, or at an older revision) to head. It is
idempotent and safe when several processes start at once: the whole upgrade runs in one
transaction behind a lock (PostgreSQL: a transaction-level advisory lock; SQLite: ``BEGIN
IMMEDIATE``, with transactional DDL), so the second process waits, then finds head and does
nothing. Within a process a mutex serialises callers, since alembic's ``context`` is global.

To add a revision, edit ``lifecycle/store/schema.py`` and then, from a Python shell::

    from alembic import command
    from lifecycle.store.migrations import alembic_config
    command.revision(alembic_config(), message="...", rev_id="0002")

and write its ``upgrade()`` by hand (``tests/store/test_store.py`` checks that the migrated schema
matches ``schema.py``). The version table is ``traffic_alembic_version``, so the traffic store
can share a database with MLflow, whose alembic table has the default name.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
)

from lifecycle.config.errors import StoreError
from lifecycle.store.engine import create_store_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

VERSION_TABLE = "traffic_alembic_version"
#: Key of the PostgreSQL advisory lock held while migrating ("lifecyc1" in ASCII).
ADVISORY_LOCK_KEY = 0x6C69666563796331
_HERE = Path(__file__).resolve().parent
_IN_PROCESS = threading.Lock()


def alembic_config() -> Config:
    """An alembic ``Config`` for the traffic store's scripts, built without an ini file."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise StoreError("the traffic store's migration scripts are missing")
    return head


def current_revision(url: str | URL) -> str | None:
    """The revision a database is at; None for a database never migrated."""
    engine = create_store_engine(url, pooled=False)
    try:
        return _revision(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the traffic store's schema revision: {exc}") from exc
    finally:
        engine.dispose()


def upgrade(url: str | URL, *, timeout_s: float = 60.0) -> str:
    """Migrate the database at ``url`` to head and return the head revision.

    ``timeout_s`` bounds the wait for another process's migration (the lock). Raises
    ``StoreError`` when the database cannot be reached or its revision is unknown to this code
    (a newer release migrated it).
    """
    retrying = Retrying(
        retry=retry_if_exception(_sqlite_locked),
        # 0.05 s, doubling up to 1 s; never a sleep that would end past the deadline.
        wait=wait_exponential(multiplier=0.05, max=1.0),
        stop=stop_before_delay(timeout_s),
        reraise=True,
    )
    return retrying(_upgrade_once, url, timeout_s=timeout_s)


def _sqlite_locked(exc: BaseException) -> bool:
    """SQLite answers "database is locked" at once, without waiting, when a connection switches
    a new file to WAL while another migrates it: worth waiting for and trying again."""
    cause = exc.__cause__
    return (
        isinstance(exc, StoreError)
        and isinstance(cause, OperationalError)
        and "locked" in str(cause)
    )


def _upgrade_once(url: str | URL, *, timeout_s: float) -> str:
    from alembic import command
    from alembic.util import CommandError

    head = head_revision()
    engine = create_store_engine(url, lock_timeout_ms=int(timeout_s * 1000), pooled=False)
    safe = engine.url.render_as_string(hide_password=True)
    try:
        # Checked first without the lock: at head (the usual case) nothing waits on writers.
        if _revision(engine) == head:
            return head
        with _IN_PROCESS, engine.connect() as conn:
            conn.execution_options(sqlite_begin="immediate")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(f"cannot migrate the traffic store at {safe}: {exc}") from exc
    finally:
        engine.dispose()
    log.info("traffic store %s migrated to revision %s", safe, head)
    return head


def _revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
