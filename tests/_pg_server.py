"""A PostgreSQL server of a test's own: ``PrivatePostgres`` and the ``private_postgres`` fixture.

Why: outage tests stop, crash and restart the server under a store, which they must not do
to the shared test server (tests/_postgres.py) that every other test is using. Like the
private redis-server of tests/faults/conftest.py, this one runs on a free port of 127.0.0.1
with its data in a directory of the test's, trust auth, ``fsync`` on, and a database ``test``.

Speed (measured on 2 shared CPUs): ``initdb`` takes 0.9-1.4 s, so it runs once per process,
into a template that already has the database ``test`` (made in single-user mode: no server
needed); each server copies it (``cp -a``, 0.05-0.5 s: disk-bound) and starts in 0.05 s.

Root: PostgreSQL refuses to run as root, so then its tools run as the ``postgres`` user
(``runuser -u postgres --``), and its files (data, sockets) go to a directory of its own in
the temporary folder instead, owned by postgres: pytest's tmp directories are private to
root, and making them enterable does not last (each pytest session that starts makes
``/tmp/pytest-of-root`` private again, and so locks out a server that another is running).
``directory`` then holds the server's log alone.

A conftest uses the fixture by importing it: ``from _pg_server import private_postgres``.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

StopMode = Literal["smart", "fast", "immediate"]
STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
DATABASE = "test"


@functools.cache
def pg_bin() -> Path | None:
    """The folder of ``initdb``, ``postgres``: Debian's newest, else the one on PATH."""
    tools = ("initdb", "postgres")
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    for folder in sorted(debian, key=lambda p: _version(p.parent.name), reverse=True):
        if all(os.access(folder / tool, os.X_OK) for tool in tools):
            return folder
    found = shutil.which("initdb")
    if found and all(shutil.which(tool) for tool in tools):
        return Path(found).parent
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def unavailable() -> str | None:
    """Why no private PostgreSQL can run here, or ``None``."""
    if pg_bin() is None:
        return "no PostgreSQL server (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(command: list[object]) -> list[str]:
    """``command`` as argv strings, to run as the postgres user when we are root."""
    args = [str(a) for a in command]
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _server_home(directory: Path) -> Path:
    """Where the server's data and sockets go: ``directory``, or as root a new directory of
    the temporary folder owned by postgres (see the module's docstring)."""
    return _postgres_dir("feedback-plugin-pg-") if os.geteuid() == 0 else directory


def _postgres_dir(prefix: str) -> Path:
    """A new directory of the temporary folder, owned by postgres when we are root."""
    made = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(made, "postgres", "postgres")
    return made


@functools.cache
def _template() -> Path:
    """A data directory made by ``initdb`` with the database ``test``, once per process."""
    bin_dir = pg_bin()
    assert bin_dir is not None, unavailable()
    top = _postgres_dir("feedback-plugin-pg-template-")
    atexit.register(shutil.rmtree, top, ignore_errors=True)
    data = top / "data"
    initdb: list[object] = [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"]
    _run([*initdb, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], top)
    single_user: list[object] = [bin_dir / "postgres", "--single", "-D", data, "-F", "postgres"]
    _run(single_user, top, stdin=f"CREATE DATABASE {DATABASE};\n")
    return data


def _run(command: list[object], cwd: Path, stdin: str = "") -> None:
    """Run ``command`` as the postgres user; fail with its output if it fails (single-user
    mode exits 0 after an SQL error, so an ERROR line is a failure too)."""
    done = subprocess.run(
        _as_postgres(command), cwd=cwd, input=stdin, capture_output=True, text=True
    )
    if done.returncode or "ERROR:" in done.stderr:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """``(command name, state, parent pid)`` of a process, from ``/proc``; ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1 :].rsplit(")", 1)
    state, ppid = rest.split()[:2]
    return name, state, int(ppid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    found = _proc_stat(pid)
    return found is not None and found[1] != "Z"


def _children(pid: int) -> list[int]:
    kids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return [kid for kid in kids if (found := _proc_stat(kid)) and found[2] == pid]


class PrivatePostgres:
    """A PostgreSQL server of its own on a free port of 127.0.0.1, its data in ``directory``
    (as root: in ``home``, a directory of postgres's, and its log in ``directory``).

    ``url`` reaches its database ``test`` as ``postgres`` (trust auth). The server is a child
    of this process (through ``runuser`` as root), so it is reaped however it ends. Every wait
    is bounded; ``close()`` leaves no server and no files behind.
    """

    def __init__(self, directory: Path) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log = directory / "server.log"
        self.home = _server_home(directory)
        self.data = self.home / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(["cp", "-a", _template(), self.data], check=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections (after crash recovery)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        bin_dir = pg_bin()
        assert bin_dir is not None
        options = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": self.home,
            "fsync": "on",
        }
        command: list[object] = [bin_dir / "postgres", "-D", self.data]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                _as_postgres(command),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C of pytest's is not a shutdown of this server
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            if self._ready():
                return
            time.sleep(0.02)
        self.kill()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"private PostgreSQL on port {self.port} did not start:\n{tail}")

    def postmaster_pid(self) -> int | None:
        """The server's main process: our child, or as root the child of our ``runuser``."""
        if self.proc is None or not self.running:
            return None
        if (found := _proc_stat(self.proc.pid)) and found[0] == "postgres":
            return self.proc.pid
        kids = _children(self.proc.pid)
        return kids[0] if kids else None

    def _ready(self) -> bool:
        """Line 8 of ``postmaster.pid`` says "ready" (as ``pg_ctl -w`` reads it); the file's
        first line is our postmaster's pid (a killed server's file names an old one)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        mine = str(self.postmaster_pid())
        return len(lines) >= 8 and lines[0] == mine and lines[7].strip() == "ready"

    def stop(self, mode: StopMode = "fast", timeout: float = 30) -> None:
        """Shut the server down: ``fast`` (clean: roll back, checkpoint) or ``immediate``
        (no checkpoint: the next start recovers from the WAL, as after a crash)."""
        pid = self.postmaster_pid()
        if pid is None or self.proc is None:
            return
        os.kill(pid, STOP_SIGNALS[mode])
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the postmaster, as in a crash; return once its processes have all gone
        (they notice on their own), so that ``start()`` may follow."""
        if not self.running:
            return
        assert self.proc is not None
        pid = self.postmaster_pid() or self.proc.pid
        backends = _children(pid)
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in backends) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the server (no checkpoint: its data goes too); delete its files, ``directory``."""
        try:
            self.stop(mode="immediate", timeout=10)
        finally:
            self.kill()
            shutil.rmtree(self.home, ignore_errors=True)
            shutil.rmtree(self.directory, ignore_errors=True)


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; in CI (``$CI`` set) fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and this test needs a private PostgreSQL: {reason}")
    pytest.skip(reason)


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A started ``PrivatePostgres``, closed after the test."""
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    server = PrivatePostgres(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
        yield server
    finally:
        server.close()
