#!/usr/bin/env bash
# The README's commands.
#   ./run.sh                          create .venv if missing, install, train the offline demo (digits)
#   ./run.sh test [pytest args]       install the test extra, lint (ruff), run the whole test suite (what CI runs)
#   ./run.sh test-fast [pytest args]  the same without the slow whole-run tests (tests/e2e/, marked slow)
#   ./run.sh RECIPE.yaml [--section.key value ...]   run any recipe
# PYTHON picks the interpreter for a new .venv (default python3); VENV its folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

ensure_venv() {
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
}

install() {  # $1: the extra to install with the package; skipped when pyproject.toml has not changed
  local stamp="$VENV/.installed-$1-$(sha1sum pyproject.toml | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  "$VENV/bin/python" -m pip install -q -e ".[$1]"
  touch "$stamp"
}

ensure_venv
case "${1:-demo}" in
  demo)
    install demo
    "$VENV/bin/python" -m vit_hf.data.demo data/digits
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/python" -m vit_hf.run recipes/demo_digits.yaml "${@:2}"
    ;;
  test)
    install test
    "$VENV/bin/ruff" check .
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  test-fast)
    install test
    "$VENV/bin/ruff" check .
    "$VENV/bin/python" -m pytest -q -m "not slow and not gpu" "${@:2}"
    ;;
  *)
    install demo
    "$VENV/bin/python" -m vit_hf.run "$@"
    ;;
esac
