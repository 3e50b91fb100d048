#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up .venv if needed, then run the default
# suite — fast, CPU-only tests on tiny models built in the tests. Extra arguments go to pytest
# (e.g. `scripts/test.sh -m slow` for the opt-in slow tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export ALIGNREC_PROGRESS=${ALIGNREC_PROGRESS:-0}
if [ $# -eq 0 ]; then
    set -- -m "not slow and not gpu and not integration"
fi
exec .venv/bin/python -m pytest "$@"
