#!/usr/bin/env bash
# Runs every test: the Rust suites (unit, integration against the real binary) and the
# end-to-end checks with real client SDKs, installed into a private virtualenv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/e2e-venv"
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  echo "setting up $venv (openai SDK) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
fi

export GEMINI_ROTATOR_E2E_PYTHON="$PWD/$venv/bin/python"
cargo test --locked -- --include-ignored "$@"
