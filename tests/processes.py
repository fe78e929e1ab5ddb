"""Real processes for tests: each gets a socket bound here on an ephemeral port.

The socket is bound and listening before the child starts, so clients can connect at once:
the kernel queues the connection until the server accepts it. No polling, no sleeps.
Every process is stopped by PID at the end (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


def listening_socket(backlog: int = 2048) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass
class Running:
    """A child process serving on `url`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    sock: socket.socket | None = None,
    stderr: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    cwd: Path = REPO,
) -> Running:
    """Start `argv` with `--fd N` appended, serving on a fresh (or given) listening socket;
    its stderr (stdout) goes to `stderr` (`stdout`) when given: a file, or `subprocess.PIPE`
    for a reader such as `LogWatch` (a pipe nobody reads could fill up). `cwd`: where it
    runs (`python -m` imports from there first: another checkout's code)."""
    sock = sock or listening_socket()
    fd = sock.fileno()
    process = subprocess.Popen(
        [*argv, "--fd", str(fd)],
        pass_fds=(fd,),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stderr=stderr,
        stdout=stdout,
    )
    port = sock.getsockname()[1]
    # Only the child holds the socket now: if it dies, clients get "connection refused"
    # at once instead of waiting in the backlog of a socket nobody will ever accept on.
    sock.close()
    return Running(name, process, port)


def start_service(module: str) -> Running:
    """One of the demo services in `services/`."""
    return start(module, [sys.executable, "-m", f"services.{module}"])


def start_gateway(
    config: Path,
    env: Mapping[str, str] | None = None,
    sock: socket.socket | None = None,
    stderr: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    cwd: Path = REPO,
) -> Running:
    """The gateway on `config`, as `gateway run` would start it (from the checkout `cwd`)."""
    argv = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    return start("gateway", argv, env, sock, stderr, stdout, cwd)
