#!/usr/bin/env bash
# Every benchmark with the settings of the committed figures (docs/benchmarks.md), one after the other.
# Run it on an otherwise idle machine: the figures are ratios within one run, but a busy machine makes
# them noisy. Env: THREADS (default: usable CPUs), N (questions, default 200), TRAINED (a fine-tuned model
# folder for the quality run; default runs/squad_v1_minilm/model from scripts/recipes/squad_v1_minilm.sh,
# skipped when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
THREADS=${THREADS:-$(python -c 'import os; print(len(os.sched_getaffinity(0)))')}
N=${N:-200}
TRAINED=${TRAINED:-runs/squad_v1_minilm/model}
python -m bench.inference --n "$N" --threads "$THREADS"
if [ -d "$TRAINED" ]; then
  python -m bench.inference --model "$TRAINED" --n "$N" --threads "$THREADS" --name inference-trained-minilm
fi
python -m bench.postprocess_cost --n "$N" --threads "$THREADS"
python -m bench.serve_load
