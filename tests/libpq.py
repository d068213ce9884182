"""libpq itself (Debian's libpq.so.5, through ctypes) as the reference for how a connection string
is read: what `psql` would connect with, after libpq's defaults and checks.

`PQconnectStartParams` runs libpq's whole option processing (parsing, defaults, connectOptions2's
checks) and starts a non-blocking attempt, which is dropped at once; `PQconninfo` then reports the
options the connection uses. `read_many` does it in a child process without PG* variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

# Messages of option processing (libpq refuses the settings), as opposed to a failed attempt to
# reach a server ("could not translate host name", "connection to server ... failed").
_REFUSALS = ("invalid ", "could not match", "missing ", "unterminated", "forbidden", "extra key",
             "end of string", "unexpected", "may not be empty", "service file", "definition of service", "unrecognized")
SETUP_HINT = "install Debian's libpq5 (apt-get install libpq5; hack/setup.sh does it)"


class _Option(ctypes.Structure):
    _fields_ = [("keyword", ctypes.c_char_p), ("envvar", ctypes.c_char_p), ("compiled", ctypes.c_char_p),
                ("val", ctypes.c_char_p), ("label", ctypes.c_char_p), ("dispchar", ctypes.c_char_p),
                ("dispsize", ctypes.c_int)]


def load() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
    lib.PQconnectStartParams.restype = ctypes.c_void_p
    lib.PQconnectStartParams.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p),
                                         ctypes.c_int]
    lib.PQconninfo.restype = ctypes.POINTER(_Option)
    lib.PQconninfo.argtypes = [ctypes.c_void_p]
    lib.PQconninfoFree.argtypes = [ctypes.POINTER(_Option)]
    lib.PQstatus.argtypes = [ctypes.c_void_p]
    lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
    lib.PQerrorMessage.restype = ctypes.c_char_p
    lib.PQfinish.argtypes = [ctypes.c_void_p]
    lib.PQlibVersion.restype = ctypes.c_int
    return lib


@dataclass(frozen=True)
class Reading:
    """What libpq made of the settings."""

    refused: bool
    error: str
    hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    dbname: str = ""
    user: str = ""
    password: str = ""
    sslmode: str = ""
    target_session_attrs: str = ""


def _ports(hosts: int, port: str) -> tuple[int, ...]:
    """connectOptions2: one port for every host, or one per host; an empty one is 5432."""
    items = port.split(",") if port else [""]
    if len(items) == 1:
        items = items * hosts
    return tuple(int(p) if p.strip() else 5432 for p in items)


def read(lib: ctypes.CDLL, settings: Sequence[Sequence[str]], expand_dbname: bool) -> Reading:
    """`settings`: (keyword, value) in order, later ones overriding earlier ones, as
    PQconnectdbParams takes them; with expand_dbname a dbname value that is a connection string
    (URI or key=value) is expanded, as `psql "$uri"` does."""
    n = len(settings)
    keys = (ctypes.c_char_p * (n + 1))(*[k.encode() for k, _ in settings], None)
    vals = (ctypes.c_char_p * (n + 1))(*[v.encode() for _, v in settings], None)
    conn = lib.PQconnectStartParams(keys, vals, 1 if expand_dbname else 0)
    try:
        error = (lib.PQerrorMessage(conn) or b"").decode(errors="replace")
        bad = lib.PQstatus(conn) == 1  # CONNECTION_BAD
        if bad and any(marker in error for marker in _REFUSALS):
            return Reading(True, error)
        info = lib.PQconninfo(conn)
        values: dict[str, str] = {}
        i = 0
        while info and info[i].keyword:
            if info[i].val is not None:
                values[info[i].keyword.decode()] = info[i].val.decode(errors="replace")
            i += 1
        if info:
            lib.PQconninfoFree(info)
    finally:
        lib.PQfinish(conn)
    hosts = tuple(values.get("host", "").split(","))
    try:
        ports = _ports(len(hosts), values.get("port", ""))
    except ValueError:
        return Reading(True, error or "invalid port")
    return Reading(False, error, hosts, ports, values.get("dbname", ""), values.get("user", ""),
                   values.get("password", ""), values.get("sslmode", ""), values.get("target_session_attrs", ""))


def read_many(requests: Sequence[tuple[Sequence[tuple[str, str]], bool]]) -> list[Reading]:
    """`read` for each request, in a child process whose environment has no PG* variable (so only
    the given settings count) and a resolver that gives up after a second (libpq resolves the
    first host while starting its attempt; nothing here needs a real answer). Threads overlap
    those lookups."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSFILE="/nonexistent/pgpass", PGSERVICEFILE="/nonexistent/pg_service.conf",
               PGSYSCONFDIR="/nonexistent", RES_OPTIONS="timeout:1 attempts:1")
    payload = json.dumps([[list(map(list, settings)), expand] for settings, expand in requests])
    done = subprocess.run([sys.executable, __file__], input=payload, capture_output=True, text=True, env=env,
                          check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"libpq reference failed: {done.stderr.strip()[-2000:]}")
    return [Reading(**{**r, "hosts": tuple(r["hosts"]), "ports": tuple(r["ports"])}) for r in json.loads(done.stdout)]


def _main() -> None:
    lib = load()
    requests = json.loads(sys.stdin.read())
    with ThreadPoolExecutor(max_workers=16) as pool:
        readings = list(pool.map(lambda r: read(lib, [tuple(kv) for kv in r[0]], r[1]), requests))
    json.dump([asdict(r) for r in readings], sys.stdout)


if __name__ == "__main__":
    _main()
