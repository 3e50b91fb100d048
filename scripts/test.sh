#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up .venv if needed, then run the default
# suite — fast, CPU-only tests on tiny models built in the tests. Extra arguments go to pytest;
# the default marker selection (no slow, gpu or integration tests) applies unless you give
# your own -m, e.g. `scripts/test.sh -m slow` or `scripts/test.sh tests/tokenizer -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export ALIGNREC_PROGRESS=${ALIGNREC_PROGRESS:-0}
for arg in "$@"; do
    case "$arg" in -m|-m*) exec .venv/bin/python -m pytest "$@" ;; esac
done
exec .venv/bin/python -m pytest -m "not slow and not gpu and not integration" "$@"
