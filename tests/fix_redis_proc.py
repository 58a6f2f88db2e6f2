"""`private_redis`: a throwaway ``redis-server`` of the test's own, which the test may kill,
pause and restart — the way to test a client whose Redis dies for real (the shared Redis
must never be stopped).

The server listens on 127.0.0.1 on a free port, keeps nothing on disk (``--save ""
--appendonly no``, working directory in the test's ``tmp_path``) and is killed when the
test ends, whatever happened. The binary is ``$WORLDSTATE_TEST_REDIS_SERVER``, else
``redis-server`` on ``PATH``, else ``/usr/bin/redis-server``. A missing binary skips the test
locally and fails it under ``CI=true``.

Load with ``-p tests.fix_redis_proc`` (pyproject ``addopts``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.fix_services import IN_CI

READY_TIMEOUT = 10.0
"""Seconds a starting server may take to answer PING before the fixture gives up."""


def find_redis_server() -> str | None:
    explicit = os.environ.get("WORLDSTATE_TEST_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One private ``redis-server``. ``url`` stays the same across `restart`."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        log_path = self.workdir / "redis-server.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in _reap
        options = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--save": "",  # no RDB snapshots
            "--appendonly": "no",
            "--dir": str(self.workdir),
            "--daemonize": "no",
            "--loglevel": "warning",
        }
        self._proc = subprocess.Popen(
            [self.binary, *(part for option in options.items() for part in option)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers_ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._reap()
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"redis-server did not start on port {self.port}; its log:\n{tail}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server: connections drop at once and every key is lost."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
        self._reap()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers (a hung server)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server if it runs, and start an empty one on the same port."""
        self.kill()
        self.start()

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _start(binary: str, workdir: Path) -> RedisProcess:
    # A free port can be taken between probing and binding: try a few.
    error: RuntimeError | None = None
    for _ in range(3):
        server = RedisProcess(binary, workdir)
        try:
            server.start()
        except RuntimeError as e:
            error = e
            continue
        return server
    assert error is not None
    raise error


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A running private ``redis-server`` (see the module docstring); killed afterwards."""
    binary = find_redis_server()
    if binary is None:
        msg = "redis-server binary not found (set WORLDSTATE_TEST_REDIS_SERVER or PATH)"
        if IN_CI:
            pytest.fail(f"{msg}; CI=true requires it", pytrace=False)
        pytest.skip(msg)
    server = _start(binary, tmp_path)
    try:
        yield server
    finally:
        server.kill()
