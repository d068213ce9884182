#!/usr/bin/env bash
# The reliability suite (issue 8): crash-anywhere trials (SIGKILL at random moments), PostgreSQL
# and API server outages, watch stalls, lock contention, hostile input, secret scanning,
# failover. Prints one table of figures at the end.
#   ./hack/reliability.sh          quick form (what CI runs as part of ./hack/test.sh)
#   ./hack/reliability.sh --full   long form: 60 crash trials, 60 s database outage, 30 s API outage
# A failing crash trial prints its seed; rerun it with PGCURATOR_CRASH_SEEDS=<seed>.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
if [ "${1:-}" = "--full" ]; then
  export PGCURATOR_RELIABILITY_FULL=1
  shift
fi
exec .venv/bin/pytest -q -p no:cacheprovider tests/reliability tests/e2e/test_shipping_e2e.py \
  tests/e2e/test_partition_policy_e2e.py tests/e2e/test_zz_secret_scan.py "$@"
