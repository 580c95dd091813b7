#!/usr/bin/env bash
# SQuAD v2.0 with a real pretrained encoder: fine-tune all-MiniLM-L6-v2 with --handle-impossible-answer (unanswerable
# questions labelled at [CLS]) on the training articles of squad-v2.0-dev.part-a.json, then score the
# held-out articles with our pipeline and with the official evaluate-v2.0.py. See docs/real-data.md.
#
#   bash scripts/recipes/squad_v2_minilm.sh            # ~45 min on 2 CPU cores; rerun to resume
#   SMOKE=1 bash scripts/recipes/squad_v2_minilm.sh    # plumbing check, a few minutes
#   DATASET=squad_v2 bash scripts/recipes/squad_v2_minilm.sh  # full SQuAD v2 from the hub (GPU-sized)
#
# The null-score threshold: training searches it on the held-out articles (best_f1_thresh) and saves it
# in qa_config.json, so `qa-serving evaluate` answers "" when null score - best span score exceeds it.
# The official script gets the same decision from --na-prob-file (our null_score_diff per question) with
# --na-prob-thresh set to that threshold, and runs its own best_f1 search on the same numbers.
#
# Sizing (full): 6,283 training questions (3,159 unanswerable) -> 7,568 windows -> 473 steps of 16 per
# epoch, ~20 min an epoch at ~2.5 s a step on 2 idle cores; BUDGET=42 minutes caps the training loop.
# Env: SHARED, OUT, SMOKE, BUDGET, FRESH (common.sh); MODEL, EPOCHS, LR, DATASET.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/squad_v2_minilm}
MODEL=${MODEL:-$(minilm_path)}
DATA=$SHARED/data/squad-v2.0-dev.part-a.json
EPOCHS=${EPOCHS:-2} LR=${LR:-1e-4} BUDGET=${BUDGET:-42}
LIMITS=()
MAX_EVAL=
if [ "${SMOKE:-0}" = 1 ]; then
  OUT=${OUT%/}-smoke EPOCHS=1 BUDGET=5 MAX_EVAL=24 FRESH=1
  LIMITS=(--max-train-samples 32 --max-eval-samples "$MAX_EVAL" --logging-steps 1)
fi
[ "${FRESH:-0}" = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"

need_shared eval/evaluate-v2.0.py
if [ -n "${DATASET:-}" ]; then
  SOURCE=(--dataset "$DATASET")
  python -c "import sys; from qa_serving.data.loading import load_examples, save_squad_json; \
save_squad_json(load_examples(sys.argv[1], split='validation'), sys.argv[2], '2.0')" "$DATASET" "$OUT/eval.json"
else
  need_shared data/squad-v2.0-dev.part-a.json
  SOURCE=(--train-file "$DATA" "${SPLIT_FLAGS[@]}")
  write_eval_split "$DATA" "$OUT/eval.json" 2.0 "$MAX_EVAL"
fi

echo "== train (--handle-impossible-answer): $MODEL, $EPOCHS epochs, lr $LR, budget $BUDGET min -> $OUT/model"
train "$OUT/train.log" --model "$MODEL" "${SOURCE[@]}" --handle-impossible-answer --output-dir "$OUT/model" --resume \
  --max-length 256 --doc-stride 128 --batch-size 16 --epochs "$EPOCHS" --learning-rate "$LR" \
  --budget-minutes "$BUDGET" --eval-batch-size 64 --no-progress "${LIMITS[@]}"
THRESH=$(python -c "import sys; from qa_serving.core.config import QAConfig; \
print(QAConfig.from_model_dir(sys.argv[1]).null_score_diff_threshold)" "$OUT/model")

echo "== evaluate (our pipeline, threshold $THRESH from qa_config.json) on $OUT/eval.json"
qa-serving evaluate --model "$OUT/model" --eval-file "$OUT/eval.json" --metric squad_v2 \
  --predictions-out "$OUT/predictions.json" --na-probs-out "$OUT/na_probs.json" \
  > "$OUT/ours.json" 2> "$OUT/evaluate.log"
echo "== official evaluate-v2.0.py on the same predictions (--na-prob-thresh $THRESH)"
python "$SHARED/eval/evaluate-v2.0.py" "$OUT/eval.json" "$OUT/predictions.json" \
  --na-prob-file "$OUT/na_probs.json" --na-prob-thresh="$THRESH" > "$OUT/official.json"

KEYS=(exact f1 HasAns_exact HasAns_f1 NoAns_exact NoAns_f1 best_f1 best_f1_thresh total)
echo "training, threshold 0:  $(headline "$OUT/model/eval_results.json:final" "${KEYS[@]}")"
echo "ours, threshold $THRESH: $(headline "$OUT/ours.json" "${KEYS[@]}")"
echo "official:               $(headline "$OUT/official.json" "${KEYS[@]}")"
