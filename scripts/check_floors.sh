#!/usr/bin/env bash
# The lowest Python and torch that pyproject.toml claims (requires-python, torch>=), installed
# in a fresh virtualenv with the test extra, then the unit tests run there.
#
#   scripts/check_floors.sh                      # python3.<floor> from PATH
#   PYTHON=/path/to/python3.10 scripts/check_floors.sh
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/check_floors.sh
#
# TORCH_INDEX_URL picks where torch comes from: PyPI's Linux wheels pull CUDA libraries
# (~3 GB), the CPU index does not. FLOOR_VENV reuses a venv between runs; PYTEST_ARGS
# replaces the default test selection (tests/).
set -euo pipefail
cd "$(dirname "$0")/.."

python_floor=$(sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
torch_floor=$(sed -n 's/^ *"torch>=\([0-9.]*\)",.*/\1/p' pyproject.toml)
python=${PYTHON:-python$python_floor}
venv=${FLOOR_VENV:-$(mktemp -d)/venv}
echo "floor check: Python $python_floor ($python), torch $torch_floor, venv $venv"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch==$torch_floor" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"${pip[@]}" -e ".[test]" "torch==$torch_floor"
"$venv/bin/python" -c "import sys, torch; print('floor check: running Python', \
sys.version.split()[0], 'torch', torch.__version__)"
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
"$venv/bin/python" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-tests -q}
