"""PostgreSQL for tests: the machine's server, fresh databases on it, throwaway clusters.

- ``PgServer``: the long-running server (PostgreSQL 15 on 127.0.0.1:5432, trust auth, user
  ``postgres``), started if it does not answer. Hands out uniquely named databases and
  drops them after use. ``DROP DATABASE`` waits for a checkpoint (about a second here), so
  drops are batched and run in parallel, where they share checkpoints.
- ``PgCluster``: a private server in a temporary directory on a free port (initdb, then
  ``pg_ctl start``), run as the ``postgres`` OS user when we are root, so a test can stop
  and start one site's server for real while the others keep running.

The fixtures that use these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("DOMICILE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BIN = Path(os.environ.get("DOMICILE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
DB_PREFIX = "domicile_t_"
CLUSTER_PREFIX = "domicile-pg-"
DROP_BATCH = 16


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def answers(url: str, timeout: int = 3) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# -- the machine's server -----------------------------------------------------------------


def ensure_server(admin_url: str = ADMIN_URL, timeout: float = 30) -> str | None:
    """Make sure the machine's server answers, starting its cluster if needed. Returns
    None when it answers, else a description of what went wrong."""
    if answers(admin_url):
        return None
    notes = []
    try:
        versions = sorted(
            os.listdir("/etc/postgresql"),
            key=lambda v: [int(p) for p in v.split(".") if p.isdigit()],
        )
    except OSError as exc:
        versions = []
        notes.append(f"cannot list /etc/postgresql: {exc}")
    for version in versions[-1:]:
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
            notes.append(f"$ {' '.join(cmd)} -> {done.returncode}\n{done.stdout}{done.stderr}")
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"$ {' '.join(cmd)} failed: {exc}")
    parts = urlsplit(admin_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _isready(parts.hostname or "127.0.0.1", parts.port or 5432) and answers(admin_url):
            return None
        time.sleep(0.2)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        notes.append(
            subprocess.run(["pg_lsclusters"], capture_output=True, text=True, timeout=10).stdout
        )
    return "\n".join(notes) or "no cluster configuration found"


def _isready(host: str, port: int) -> bool:
    try:
        done = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", host, "-p", str(port), "-t", "1"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


class PgServer:
    """The machine's server: fresh databases, dropped in parallel batches."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self._ids = itertools.count(1)
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def new_name(self, label: str = "db") -> str:
        """A unique database name (not created). It carries our pid, so a later session
        can tell leftovers of a dead run from databases another live run is using."""
        label = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:20] or "db"
        return f"{DB_PREFIX}{os.getpid()}_{next(self._ids)}_{label}_{secrets.token_hex(3)}"

    def url(self, dbname: str) -> str:
        return with_database(self.admin_url, dbname)

    def create_database(self, label: str = "db") -> str:
        """Create a fresh database; returns its name."""
        name = self.new_name(label)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def discard(self, names: Sequence[str]) -> None:
        """Drop these databases soon (batched)."""
        with self._lock:
            self._pending.extend(names)
            batch = self._pending if len(self._pending) >= DROP_BATCH else []
            self._pending = [] if batch else self._pending
        if batch:
            self._drop(batch)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        self._drop(batch)

    def sweep(self) -> None:
        """Drop databases left behind by test runs that are no longer alive."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s",
                    (DB_PREFIX.replace("_", r"\_") + "%",),
                )
            ]
        stale = []
        for name in names:
            m = re.match(re.escape(DB_PREFIX) + r"(\d+)_", name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                stale.append(name)
        self._drop(stale)

    def _drop(self, names: Sequence[str]) -> None:
        if not names:
            return

        def drop(name: str) -> None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

        # Parallel drops share the checkpoint each of them waits for.
        with ThreadPoolExecutor(max_workers=min(len(names), DROP_BATCH)) as pool:
            list(pool.map(drop, names))


# -- throwaway clusters -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shared_tmp() -> Path:
    """A temporary directory the ``postgres`` user can reach (pytest's own tmp_path sits
    under a root-only directory); in memory when possible, since clusters are copied and
    written a lot and never need to survive a reboot."""
    chosen = os.environ.get("DOMICILE_TEST_PG_TMP")
    if chosen:
        return Path(chosen)
    for candidate in (Path("/dev/shm"), Path("/tmp")):
        if candidate.is_dir() and os.stat(candidate).st_mode & 0o1003 == 0o1003:
            return candidate
    return Path(tempfile.gettempdir())


class ClusterError(RuntimeError):
    pass


class PgCluster:
    """A private PostgreSQL server: ``create()``, then ``url``, ``stop()``, ``start()``,
    ``destroy()``. Durability is switched off (fsync, full-page writes): it is for tests.

    ``url`` points at the ``domicile`` database, created with the cluster;
    ``database_url(name)`` at any other (a store opened with ``create=True`` creates it).
    """

    host = "127.0.0.1"
    dbname = "domicile"

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def create(cls, *, dbname: str = "domicile", attempts: int = 3) -> PgCluster:
        cluster = cls(_new_root(), free_port())
        try:
            cluster._copy_template()
            cluster._configure()
            for attempt in range(attempts):
                try:
                    cluster.start()
                    break
                except ClusterError:
                    if attempt == attempts - 1 or "already in use" not in _tail(cluster.log):
                        raise
                    cluster.port = free_port()  # lost the race for the port: another one
                    cluster._configure()
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except BaseException:
            cluster.destroy()
            raise
        cluster.dbname = dbname
        return cluster

    @property
    def admin_url(self) -> str:
        return self.database_url("postgres")

    @property
    def url(self) -> str:
        return self.database_url(self.dbname)

    def database_url(self, dbname: str) -> str:
        return f"postgresql://{OS_USER}@{self.host}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return _isready(self.host, self.port)

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections (no-op if it does)."""
        if self.running:
            return
        self._ctl("-l", str(self.log), "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)
        self._wait(ready=True, timeout=timeout)

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Stop the server (``fast``: disconnect clients, clean shutdown; ``immediate``:
        like a crash). Existing connections break; new ones are refused. No-op when
        stopped already."""
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 10)
        except ClusterError:
            if mode == "immediate":
                raise
            self._ctl(
                "-m", "immediate", "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 10
            )
        self._wait(ready=False, timeout=timeout)

    def destroy(self) -> None:
        """Stop the server however it can be stopped, then delete its files. Safe to call
        more than once and after any failure."""
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ClusterError, OSError, subprocess.SubprocessError):
                self._ctl("-m", "immediate", "-w", "-t", "20", "stop", timeout=30)
            pid = self._postmaster_pid()
            if pid is not None and self._is_our_postmaster(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)  # our own postmaster, by its id
                deadline = time.monotonic() + 10
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"PgCluster(port={self.port}, root={str(self.root)!r})"

    def standby(self, timeout: float = 120) -> PgCluster:
        """A streaming replica of this server, started: ``pg_basebackup -R`` (which writes
        ``standby.signal`` and the primary's ``primary_conninfo``) into a new directory,
        on a port of its own. It answers reads and refuses writes; ``destroy()`` it."""
        replica = PgCluster(_new_root("standby-"), free_port())
        try:
            replica._run(  # -c fast: checkpoint at once (a spread one takes minutes)
                [
                    str(PG_BIN / "pg_basebackup"),
                    "-h", self.host, "-p", str(self.port), "-U", OS_USER,
                    "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
                ],
                timeout=timeout,
            )  # fmt: skip
            conf = replica.data / "postgresql.auto.conf"
            with conf.open("a") as f:  # later lines win over the primary's copied settings
                f.write(f"port = {replica.port}\nunix_socket_directories = '{replica.root}'\n")
            replica.start()
        except BaseException:
            replica.destroy()
            raise
        return replica

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _as_owner(cmd: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", OS_USER, "--", *cmd]
        return cmd

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                self._as_owner(cmd),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ClusterError(f"{cmd[0]} failed: {exc}\n{_tail(self.log)}") from exc
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n"
                f"server log:\n{_tail(self.log)}"
            )
        return done

    def _copy_template(self) -> None:
        """initdb once per session (it takes seconds), then copy its data directory."""
        template = _template()
        done = subprocess.run(
            ["cp", "-a", str(template.data), str(self.data)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"cannot copy the template cluster: {done.stderr}")

    def _initdb(self) -> None:
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D", str(self.data),
                "-U", OS_USER,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )  # fmt: skip

    def _configure(self) -> None:
        conf = self.data / "postgresql.auto.conf"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
            "max_connections": "40",
            "logging_collector": "off",
        }
        text = "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf.write_text(text)
        self._chown(conf)

    def _ctl(self, *args: str, timeout: float) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-s", *args], timeout=timeout)

    def _wait(self, *, ready: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running == ready and (not ready or answers(self.admin_url)):
                return
            time.sleep(0.1)
        state = "accept connections" if ready else "stop"
        raise ClusterError(f"{self!r} did not {state} within {timeout}s\n{_tail(self.log)}")

    def _is_our_postmaster(self, pid: int) -> bool:
        """The process still runs, and serves this data directory (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.data).encode() in cmdline

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _new_root(kind: str = "") -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"{CLUSTER_PREFIX}{os.getpid()}-{kind}", dir=_shared_tmp()))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(OS_USER)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    return root


_template_lock = threading.Lock()
_template_cluster: PgCluster | None = None


def _template() -> PgCluster:
    """A freshly initdb'ed, never started cluster that others are copied from."""
    global _template_cluster
    with _template_lock:
        if _template_cluster is None or not (_template_cluster.data / "PG_VERSION").exists():
            template = PgCluster(_new_root("template-"), 0)
            try:
                template._initdb()
            except BaseException:
                template.destroy()
                raise
            _template_cluster = template
        return _template_cluster


def remove_template() -> None:
    global _template_cluster
    with _template_lock:
        if _template_cluster is not None:
            _template_cluster.destroy()
            _template_cluster = None


def sweep_clusters() -> None:
    """Remove throwaway clusters left behind by test runs that died."""
    for root in _shared_tmp().glob(f"{CLUSTER_PREFIX}*"):
        m = re.match(re.escape(CLUSTER_PREFIX) + r"(\d+)-", root.name)
        if not m or not root.is_dir():
            continue
        owner = int(m.group(1))
        if owner == os.getpid() or _pid_alive(owner):
            continue
        PgCluster(root, 0).destroy()
