#!/usr/bin/env bash
# Install everything the tests need (Python packages, Debian's chromium + chromium-driver) and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash scripts/install.sh
python3 -m pip install -q -r requirements-test.txt
export HF_HUB_OFFLINE=1
python3 -m pytest -q "$@"
