"""An embedded PostgreSQL for the demo and the test suite: no manual install, no Docker.

The `pgserver` wheel ships PostgreSQL binaries; we use only those binaries and drive them
with `initdb` and `pg_ctl` ourselves, because pgserver's own server class listens on a Unix
socket only, chmods every parent directory when run as root and stops the server from an
`atexit` hook, and we want a TCP port, a data directory that survives restarts, and a stop
we control.

PostgreSQL refuses to run as root. As root we run its processes as the unprivileged `nobody`
user (no user is created) and hand the data directory to it; as a normal user they run as
that user. Either way the server listens on 127.0.0.1 only, with trust authentication: this
is a development database, never a production one.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.config.settings import Settings
from gateway.errors import DevServerError

UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_SECONDS = 60


def bin_dir() -> Path:
    """Where the pgserver wheel keeps `initdb`, `pg_ctl` and `postgres`.

    Found without importing pgserver: its package import creates lock files in the user's
    runtime directory and warns when XDG_RUNTIME_DIR is unset.
    """
    found = importlib.util.find_spec("pgserver")
    if found is None or not found.submodule_search_locations:
        raise DevServerError(
            "the `pgserver` package is missing: pip install 'fanout[demo]', or set DATABASE_URL"
        )
    return Path(next(iter(found.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server on `data_dir`, listening on 127.0.0.1:`port`.

    `start()` initialises the directory on first use and starts the server (or adopts one
    already running on that directory, e.g. left over by a killed demo); `stop()` stops it
    with a fast shutdown. Use it as a context manager to pair the two.
    """

    data_dir: Path
    port: int
    fsync: bool = True  # the test suite turns it off: its data is thrown away anyway

    def __repr__(self) -> str:
        state = "running" if self.pid() else "stopped"
        return f"<EmbeddedPostgres {self.data_dir} 127.0.0.1:{self.port} {state}>"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> str:
        """Initialise if needed, start unless already running; return the DSN."""
        self._prepare_directory()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        running = self._running_port()
        if running is not None:
            self.port = running
            return self.dsn
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",  # TCP only: no socket file to place or clean up
            "-c max_connections=200",
        ]
        if not self.fsync:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "start",
        )
        return self.dsn

    def stop(self) -> None:
        """Fast shutdown (running transactions are rolled back); a no-op if not running."""
        if self.pid() is not None:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port: every client connection is cut."""
        self.stop()
        self.start()

    def pid(self) -> int | None:
        """The postmaster's PID when a server runs on this directory, else None."""
        info = self._postmaster_lines()
        if not info:
            return None
        pid = int(info[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a stale postmaster.pid left by a crash
        except PermissionError:
            pass  # alive, owned by another user
        return pid

    def _postmaster_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return []

    def _running_port(self) -> int | None:
        lines = self._postmaster_lines()
        if self.pid() is None or len(lines) < 4:
            return None
        return int(lines[3])

    def _prepare_directory(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user is None:
            self.data_dir.chmod(0o700)  # PostgreSQL insists on 0700 or 0750
            return
        blocked = unreachable_parent(self.data_dir)
        if blocked is not None:
            raise DevServerError(
                f"{blocked} is not searchable by other users, so PostgreSQL (run as "
                f"{UNPRIVILEGED_USER!r} because we are root) cannot reach {self.data_dir}; "
                f"use a data directory elsewhere or set DATABASE_URL"
            )
        if self.data_dir.stat().st_uid != user.pw_uid:
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)

    def _run(self, program: str, *args: str) -> None:
        user = _run_as()
        try:
            result = subprocess.run(
                [str(bin_dir() / program), *args],
                # pg_ctl's server inherits our stdout: a pipe would never reach EOF
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                check=False,
                timeout=START_TIMEOUT_SECONDS + 10,
                user=user.pw_uid if user is not None else None,
                group=user.pw_gid if user is not None else None,
                extra_groups=[] if user is not None else None,
            )
        except subprocess.TimeoutExpired:
            raise DevServerError(f"{program} did not finish; see {self._log}") from None
        if result.returncode != 0:
            why = result.stderr.decode(errors="replace").strip().splitlines()
            raise DevServerError(
                f"{program} failed ({why[-1] if why else result.returncode}); see {self._log}"
            )

    @property
    def _log(self) -> Path:
        return self.data_dir / "server.log"


def unreachable_parent(data_dir: Path) -> Path | None:
    """The first parent of `data_dir` the server's user cannot search, when we are root.

    As a normal user the server runs as us and reaches whatever we reach: always None.
    """
    if os.geteuid() != 0:
        return None
    for parent in data_dir.resolve().parents:
        # a parent not made yet will be (mkdir), searchable under the usual umask
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: `nobody` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise DevServerError(
            f"running as root needs the unprivileged user {UNPRIVILEGED_USER!r}, which is missing"
        ) from None


@contextmanager
def database(data_dir: Path, port: int, *, fsync: bool = True) -> Iterator[str]:
    """A DSN for the demo or the tests: DATABASE_URL when it is set (nothing is started),
    else an embedded server on `data_dir` and `port`, stopped when the block exits.
    """
    settings = Settings()
    if "database_url" in settings.model_fields_set:
        yield settings.database_url
        return
    with EmbeddedPostgres(data_dir, port, fsync=fsync) as server:
        yield server.dsn


@contextmanager
def scratch_database(prefix: str = "fanout-pg-") -> Iterator[str]:
    """A throwaway database for tests, benchmarks and load tests: DATABASE_URL when it is set,
    else an embedded server without fsync in a new temporary directory, deleted afterwards.
    """
    # under the system's temporary directory and world-searchable, not in a private one
    # (pytest's is 0700): as root the server runs as `nobody`, who must reach it
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        with database(base / "pgdata", free_port(), fsync=False) as dsn:
            yield dsn
    finally:
        shutil.rmtree(base, ignore_errors=True)
