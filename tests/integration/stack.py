"""compose.yaml's services, started natively on loopback ports with the very same commands.

There is no Docker engine on these machines, so the integration tier reads compose.yaml,
takes each service's ``command`` verbatim and runs it as a local process with the
environment the file gives that service, its values pointed at loopback services instead
of container names. A setting the file gives a service that the tests do not is an error:
the file cannot drift from what is tested.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
BIN = Path(sys.executable).parent

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


class MissingSetting(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty, as compose reports it."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${V}``, ``${V:-default}``, ``${V:?err}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name, "")
        if op == ":?" and not current:
            raise MissingSetting(f"{name}: {arg}")
        if op == ":-" and not current:
            return arg
        return current

    return _VAR.sub(one, value)


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """compose.yaml as compose would resolve it with ``env`` as its .env (merge keys too)."""
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return interpolate(raw, env)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


class Service:
    """One compose service as a local process group (it and every child it starts)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        logs: Path,
        *,
        health: str | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.name, self.command, self.env, self.health, self.cwd = name, command, env, health, cwd
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        executable = BIN / self.command[0]
        argv = [str(executable) if executable.exists() else self.command[0], *self.command[1:]]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with all its children
        )
        log.close()
        return self

    def wait_healthy(self, timeout: float = 180.0) -> None:
        assert self.proc is not None and self.health is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            try:
                if httpx.get(self.health, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not healthy within {timeout:.0f} s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Children that outlived their parent are in the same group: end them too.
        deadline = time.monotonic() + 10
        while group_alive(self.proc.pid) and time.monotonic() < deadline:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists but not ours
        return True
    # A zombie leader still "exists"; look for live members.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextmanager
def services(*items: Service) -> Iterator[list[Service]]:
    """Start services in order (each healthy before the next), stop them in reverse."""
    with ExitStack() as stack:
        started = []
        for item in items:
            stack.callback(item.stop)
            item.start()
            if item.health:
                item.wait_healthy()
            started.append(item)
        yield started


def run(command: list[str], env: dict[str, str], *, timeout: float = 600.0) -> str:
    """A one-shot service or CLI call; its output, or an error carrying it."""
    executable = BIN / command[0]
    argv = [str(executable) if executable.exists() else command[0], *command[1:]]
    done = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout
