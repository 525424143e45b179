#!/usr/bin/env bash
# The browser tests in headless Chromium: installs Debian's chromium and chromium-driver when
# they are missing (CI runs as root on Debian), selenium into a private virtualenv, then runs
# the ignored Rust tests named `*_in_chromium`, which start the fake upstream and the real
# binary: `dashboard_in_chromium` (tests/dashboard.rs) drives tests/ui/dashboard_ui.py
# (screenshots: target/artifacts/), `web_pages_call_the_api_in_chromium` (tests/access.rs)
# loads chat pages from a listed and an unlisted origin (tests/ui/cors_pages.py).
#
# Skips (exit 0, with a message) only when the browser is missing and apt-get is unavailable.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ui-test: SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver is missing and apt-get is unavailable" >&2
    exit 0
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "ui-test: installing chromium and chromium-driver ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends chromium chromium-driver; then
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends chromium chromium-driver
  fi
fi

venv="target/ui-venv"
if ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
  echo "ui-test: setting up $venv (selenium) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/ui/requirements.txt
fi

mkdir -p target/artifacts
export GEMINI_ROTATOR_UI_PYTHON="$PWD/$venv/bin/python"
cargo test --locked --test dashboard --test access -- --ignored --nocapture in_chromium
echo "ui-test: screenshots in target/artifacts/" >&2
