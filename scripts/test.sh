#!/usr/bin/env bash
# Install everything the tests need (Debian's chromium + chromium-driver; Python packages into .venv) and run
# the import rules (import-linter contracts in pyproject.toml), then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash scripts/install.sh
.venv/bin/python -m pip install -q -r requirements-test.txt
export HF_HUB_OFFLINE=1
.venv/bin/lint-imports
.venv/bin/python -m pytest -q "$@"
