"""`./hack/dev-up.sh` (`python -m pgcurator_devenv.up`): local control plane + embedded PostgreSQL + CRDs + the seed 001 example
+ the operator, all real processes on this machine."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from .controlplane import REPO_ROOT, ControlPlane, KubectlError
from .ports import free_port
from .postgres import EmbeddedPostgres

APP_ROLE = "app"
APP_DB = "app"


def secret_manifest(name: str, namespace: str, uri: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"uri": base64.b64encode(uri.encode()).decode()},
    })


def start_operator(kubeconfig: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(extra_env or {})}
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pgcurator.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def say(msg: str) -> None:
    print(f"[dev up] {msg}", file=sys.stderr, flush=True)


def wait_ready(cp: ControlPlane, name: str, namespace: str, timeout: float,
               operator: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if operator is not None and operator.poll() is not None:
            return False
        out = cp.kubectl("get", "partitionpolicy", name, "-n", namespace, "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            if status.get("ready") == "True":
                return True
        time.sleep(1)
    return False


def dev_up(workdir: Path, exit_after_ready: bool = False) -> int:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say("local control plane (kube-apiserver + etcd; built from Go modules on first use) ...")
    cp = ControlPlane(workdir / "controlplane")
    pg = EmbeddedPostgres(workdir / "postgres")
    operator: subprocess.Popen[bytes] | None = None
    try:
        cp.start()
        say(f"control plane up; in another shell: export KUBECONFIG={cp.kubeconfig}")
        cp.apply_crds(REPO_ROOT / "crds")
        say("embedded PostgreSQL 18 ...")
        pg.start()
        password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        pg.create_role(APP_ROLE, password)
        pg.create_database(APP_DB, owner=APP_ROLE)
        pg.psql(f"SET ROLE {APP_ROLE};\n" + (REPO_ROOT / "examples" / "event-logs.sql").read_text(), database=APP_DB)
        cp.kubectl("apply", "-f", "-", input=secret_manifest("app-db", "default", pg.dsn(APP_DB, APP_ROLE, password)))
        say("operator ...")
        metrics_port = free_port()
        operator = start_operator(cp.kubeconfig, workdir / "operator.log",
                                  {"PGCURATOR_HTTP_ADDRESS": f"127.0.0.1:{metrics_port}"})
        cp.kubectl("apply", "-n", "default", "-f", str(REPO_ROOT / "examples" / "partitionpolicy-event-logs.yaml"))
        if not wait_ready(cp, "event-logs", "default", 120, operator):
            say(f"the example did not become Ready; see {workdir / 'operator.log'}")
            print(cp.kubectl("get", "partitionpolicies", "-o", "yaml", check=False).stdout)
            return 1
        print(cp.kubectl("get", "partitionpolicies", "-o", "wide").stdout, flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(f"# PostgreSQL: psql 'host=127.0.0.1 port={pg.port} dbname={APP_DB} user={APP_ROLE}' (password: Secret default/app-db)")
        print(f"# operator log: {workdir / 'operator.log'}; metrics: http://127.0.0.1:{metrics_port}/metrics",
              flush=True)
        if exit_after_ready:
            return 0
        say("running; Ctrl-C tears everything down")
        stop = False

        def handle(signum: int, frame: FrameType | None) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
        while not stop and operator.poll() is None:
            time.sleep(0.5)
        if operator.poll() is not None:
            say(f"the operator exited ({operator.returncode}); see {workdir / 'operator.log'}")
            return 1
        return 0
    except (RuntimeError, KubectlError, OSError) as exc:  # a clear line, not a traceback
        say(f"failed: {exc}")
        return 1
    finally:
        if operator is not None and operator.poll() is None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        pg.stop()
        cp.stop()
        say("stopped")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pgcurator_devenv.up", description=__doc__)
    p.add_argument("--workdir", default=".dev")
    p.add_argument("--exit-after-ready", action="store_true", help="tear down once the example is Ready")
    args = p.parse_args(argv)
    return dev_up(Path(args.workdir), exit_after_ready=args.exit_after_ready)


if __name__ == "__main__":
    sys.exit(main())
