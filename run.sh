#!/usr/bin/env bash
# PrivatEyes-JAX set-up and entry point.
#   ./run.sh [flags]    run the demo job end to end on the embedded synthetic dataset
#                       (flags go to experiments/demo.py, e.g. --overwrite)
#   ./run.sh test [...] run the whole test suite (extra arguments go to pytest)
# A local virtualenv (.venv, or $PRIVATEYES_VENV) is created on first use and reused;
# the project is (re)installed into it whenever setup.py changes.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${PRIVATEYES_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtualenv $VENV ..."
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.privateyes-installed"
if [ ! -f "$STAMP" ] || [ setup.py -nt "$STAMP" ]; then
  echo "Installing privateyes_jax and its dependencies into $VENV ..."
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$STAMP"
fi

cmd="${1:-demo}"
if [[ "$cmd" == -* ]]; then
  cmd=demo  # ./run.sh --overwrite: flags for the demo.
else
  [ $# -gt 0 ] && shift
fi
case "$cmd" in
  demo)
    exec "$VENV/bin/python" -m experiments.demo "$@" ;;
  test)
    exec "$VENV/bin/python" -m pytest tests -q "$@" ;;
  *)
    echo "usage: ./run.sh [demo] [--overwrite ...] | ./run.sh test [pytest args...]" >&2
    exit 2 ;;
esac
