#!/usr/bin/env bash
# SQuAD v1.1 on multilingual-e5-small (the encoder of korquad_e5.sh), so English users can pick between it
# and all-MiniLM-L6-v2: the same step-budget recipe as korquad_e5.sh on the training articles of
# squad-v1.1-dev.part-a.json, scored on the held-out articles by our pipeline and the official
# evaluate-v1.1.py. MODEL=minilm runs the identical recipe (same steps, batches, lr, frozen word embeddings)
# on all-MiniLM-L6-v2: the equal-budget comparison in docs/korean.md ("What the 4-bit weights cost").
#
#   bash scripts/recipes/squad_v1_e5.sh                                       # rerun to resume
#   MODEL=minilm OUT=runs/squad_v1_minilm_steps bash scripts/recipes/squad_v1_e5.sh
#   SMOKE=1 bash scripts/recipes/squad_v1_e5.sh                               # plumbing check
#
# Sizing: 7,154 training questions -> 8,321 windows of <= 256 tokens -> 520 steps of 16 per epoch;
# STEPS=800 is ~1.5 epochs. Env: see step_recipe in common.sh.
# STEPS=1040 (1.85 epochs of e5's windows, 61 min on 2 AMD EPYC cores): EM 61.9 / F1 72.8, the reader of
# docs/calibration.md "A stronger reader" (coverage at 80% precision 58.1%).
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/squad_v1_e5}
step_recipe "$SHARED/data/squad-v1.1-dev.part-a.json" 1.1 squad evaluate-v1.1.py
