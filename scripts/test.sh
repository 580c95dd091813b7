#!/usr/bin/env bash
# The test command of the README (what CI runs): the default suite, without the "slow" marker.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
exec python -m pytest -q "$@"
