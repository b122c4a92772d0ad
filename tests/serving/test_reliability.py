"""Faults a gateway that runs unattended must survive, counted: what got a 2xx is stored.

The gateway here is `lifecycle serve` as a user runs it (a subprocess on a free port, the
real registry and SQLite traffic store), killed with SIGKILL under load and started again.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import TINY
from tests.gateway_harness import free_port

TOKEN = "reliability-admin-token-7f3a9c"
WRONG = "wrong-token-that-must-not-be-logged-4d2e"
TEXTS = [
    "I lost my card at the station",
    "refund my last order please",
    "the app keeps crashing when I log in",
    "how do I change my address",
    "cancel my subscription",
]


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log


@contextmanager
def serve(home: Path, tmp_path: Path, tag: str, **env_extra: str) -> Iterator[Served]:
    """`lifecycle serve` in a subprocess, ready; stopped (SIGTERM) on exit if still alive."""
    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    port = free_port()
    env = {
        **os.environ,
        "LIFECYCLE_HOME": str(home),
        "LIFECYCLE_SPECIALISTS_FILE": str(spec_file),
        "LIFECYCLE_REGISTRY_POLL_S": "0",
        "LIFECYCLE_ADMIN_TOKEN": TOKEN,
        "LIFECYCLE_PORT": str(port),
        **env_extra,
    }
    log = tmp_path / f"gateway-{tag}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("lifecycle")), "serve", "--verbose"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.3)
        yield Served(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


class Load:
    """Client threads that predict and send labels, recording every acknowledged item."""

    def __init__(self, url: str, threads: int = 8) -> None:
        self.url = url
        self.requests: set[str] = set()
        self.labels: dict[str, str] = {}  # request id -> last label acknowledged
        self.refused: list[int] = []
        self.admin: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def acknowledged(self) -> int:
        with self._lock:
            return len(self.requests)

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self._step(client, rng, seed)
                except httpx.HTTPError:
                    if self._stop.wait(0.05):
                        return  # the gateway is gone (killed): nothing more is acknowledged

    def _step(self, client: httpx.Client, rng: random.Random, seed: int) -> None:
        texts = rng.sample(TEXTS, rng.randint(1, 4))
        r = client.post("/v1/specialists/tiny/predict", json={"texts": texts})
        if r.status_code != 200:
            self.refused.append(r.status_code)
            return
        ids = [p["request_id"] for p in r.json()["predictions"]]
        with self._lock:
            self.requests.update(ids)
        if rng.random() < 0.3:
            # A label the specialist knows: one it just predicted for any of the texts.
            label = rng.choice([p["label"] for p in r.json()["predictions"]])
            f = client.post(
                "/v1/specialists/tiny/feedback", json={"request_id": ids[0], "label": label}
            )
            if f.status_code != 202:
                self.refused.append(f.status_code)
                return
            with self._lock:
                self.labels[ids[0]] = label
        if seed == 0 and rng.random() < 0.05:
            token = TOKEN if rng.random() < 0.5 else WRONG
            a = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {token}"})
            self.admin.append(a.status_code)


def _stored(home: Path) -> tuple[set[str], dict[str, str]]:
    with sqlite3.connect(home / "traffic.db") as conn:
        ids = {i for (i,) in conn.execute("SELECT id FROM requests")}
        labels: dict[str, str] = {}
        for request_id, label in conn.execute(
            "SELECT request_id, label FROM feedback ORDER BY created_at, rowid"
        ):
            labels[request_id] = label
    return ids, labels


@pytest.mark.slow
def test_a_gateway_killed_under_load_loses_no_answered_request(
    served_home: Path, tmp_path: Path
) -> None:
    # A copy: the traffic db and the journal go under the home, and the module's fixture stays
    # as every test found it.
    home = Path(shutil.copytree(served_home, tmp_path / "home"))
    with serve(home, tmp_path, "killed") as first:
        with Load(first.url) as load:
            deadline = time.monotonic() + 120
            while load.acknowledged() < 600:
                assert time.monotonic() < deadline, "too slow to build load"
                assert first.proc.poll() is None
                time.sleep(0.05)
            first.proc.send_signal(signal.SIGKILL)  # no shutdown, no flush, no atexit
            first.proc.wait(timeout=30)
        assert first.proc.returncode == -signal.SIGKILL
    assert load.refused == [], load.refused
    answered, labelled = set(load.requests), dict(load.labels)
    assert len(answered) >= 600 and len(labelled) >= 20

    with serve(home, tmp_path, "restarted") as second:
        after = httpx.post(f"{second.url}/v1/specialists/tiny/predict", json={"texts": TEXTS})
        assert after.status_code == 200
    assert second.proc.returncode in (0, -signal.SIGTERM)

    ids, labels = _stored(home)
    assert answered <= ids, f"{len(answered - ids)} answered requests missing after SIGKILL"
    assert {k: labels.get(k) for k in labelled} == labelled
    # Tokens are compared, never written down: neither the right nor a wrong one is in the logs.
    assert 401 in load.admin and 200 in load.admin, load.admin
    for log in (first.log, second.log):
        text = log.read_text()
        assert TOKEN not in text and WRONG not in text
        assert "Traceback" not in text
    journal = home / "journal"
    assert not list(journal.glob("*/*.jsonl")), "the restarted gateway left records unreplayed"
