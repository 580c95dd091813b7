#!/usr/bin/env bash
# Start or stop TorchServe for qa-serving on loopback (a thin wrapper over `qa-serving serve`).
#   scripts/serve.sh start [qa-serving serve flags...]   e.g. scripts/serve.sh start --models qa
#   scripts/serve.sh stop  [--run-dir DIR]
#   scripts/serve.sh key   [inference|management|API]    prints a key of the running server
# Archives come from model_store/ (build them with `qa-serving archive --model DIR --name qa`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
cmd="${1:-start}"
shift || true
case "$cmd" in
  start) exec qa-serving serve "$@" ;;
  stop)  exec qa-serving serve --stop "$@" ;;
  key)   exec qa-serving serve --print-key "${1:-inference}" "${@:2}" ;;
  *)     echo "usage: $0 start|stop|key [args]" >&2; exit 2 ;;
esac
