#!/usr/bin/env bash
# Runs every test: the Rust suites (unit, integration against the real binary, real Redis
# servers for the shared state) and the
# end-to-end checks with real client SDKs (openai, google-genai, anthropic), installed into a private
# virtualenv on first use and again whenever tests/e2e/requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/e2e-venv"
requirements="tests/e2e/requirements.txt"
stamp="$venv/requirements.installed"
# The stamp is the requirements file as last installed: cheaper than importing the SDKs.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
  echo "setting up $venv (SDKs from $requirements) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# The shared-state tests (tests/state_redis.rs) start real Redis servers: Debian's package.
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (Debian's package) for the shared-state tests ..." >&2
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

export GEMINI_ROTATOR_E2E_PYTHON="$PWD/$venv/bin/python"
cargo test --locked -- --include-ignored "$@"
