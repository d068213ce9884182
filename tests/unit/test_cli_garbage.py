"""`pgcurator apply` / `plan` fed garbage (files, YAML, resources, arguments): always an exit code
and at most a clear line, never a traceback (issue 12)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcurator.cli import main

# Nothing listens on port 1: a resource that happens to be valid fails to connect (exit 1), quickly.
NOWHERE = "postgresql://u:p@127.0.0.1:1/db"
KINDS = ["PartitionPolicy", "IndexPolicy", "VectorIndex", "DbTlsCert", "Pod", ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
spec_like = st.fixed_dictionaries({"database": st.one_of(json_like, st.just({"secretName": "db"}))},
                                  optional={"table": st.one_of(json_like, st.just({"name": "t"})),
                                            "range": json_like, "indexes": json_like, "column": json_like,
                                            "timeouts": json_like, "dryRun": json_like})
resource_like = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(KINDS), json_like)},
    optional={"metadata": st.one_of(st.just({"name": "r"}), json_like), "spec": st.one_of(spec_like, json_like)})


def as_yaml(doc: Any) -> bytes:
    return yaml.safe_dump_all(doc if isinstance(doc, list) else [doc], allow_unicode=True).encode()


contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    resource_like.map(as_yaml),
    st.lists(resource_like, min_size=1, max_size=3).map(as_yaml),
)
arguments = st.lists(st.sampled_from(["--now", "--bogus", "-f", "", "x", "2026-13-45", "--database-url"]),
                     max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["apply", "plan"]), content=contents,
       now=st.one_of(st.none(), st.text(max_size=25), st.datetimes().map(str)), extra=arguments)
def test_garbage_never_gives_a_traceback(tmp_path: Path, command: str, content: bytes, now: str | None,
                                         extra: list[str]) -> None:
    path = tmp_path / "resource.yaml"
    path.write_bytes(content)
    argv = [command, "-f", str(path), "--database-url", NOWHERE, *(["--now", now] if now is not None else []),
            *extra]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    assert rc in (0, 1, 2), (rc, err.getvalue())
    assert "Traceback" not in out.getvalue() + err.getvalue(), err.getvalue()
    if rc == 2 and "usage:" not in err.getvalue():
        assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


def test_missing_file_and_bad_now_in_process(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["apply", "-f", str(tmp_path / "none.yaml"), "--database-url", NOWHERE]) == 2
        assert main(["plan", "-f", str(tmp_path / "none.yaml"), "--database-url", NOWHERE, "--now", "x"]) == 2
    assert "--now 'x' is not an ISO time" in err.getvalue()
