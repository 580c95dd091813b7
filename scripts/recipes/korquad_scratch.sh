#!/usr/bin/env bash
# KorQuAD 1.0 without a pretrained Korean encoder (offline): `qa-serving train --from-scratch small`
# trains a WordPiece tokenizer on the training articles of korquad-v1.0-dev.part-a.json (every Hangul
# syllable its own token, so answers can stop before a particle) and a small BERT (128 hidden, 3 layers)
# on them, within a time budget; then scores the held-out articles with KorQuAD's character-level F1
# (--metric korquad; training picks it from the file name) and with the official evaluate-korquad-v1.0.py.
# A from-scratch model on ~3,200 questions learns little language: this is the offline KorQuAD path and
# a floor, not a KorQuAD result. See docs/real-data.md.
#
#   bash scripts/recipes/korquad_scratch.sh            # BUDGET=30 minutes of training on 2 CPU cores
#   SMOKE=1 bash scripts/recipes/korquad_scratch.sh    # plumbing check, a few minutes
#
# Env: SHARED, OUT, SMOKE, BUDGET, FRESH (common.sh); SIZE (tiny|small|medium), EPOCHS, LR, VOCAB.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/korquad_scratch}
DATA=$SHARED/data/korquad-v1.0-dev.part-a.json
SIZE=${SIZE:-small} EPOCHS=${EPOCHS:-10} LR=${LR:-1e-3} BUDGET=${BUDGET:-30} VOCAB=${VOCAB:-8000}
LIMITS=()
MAX_EVAL=
if [ "${SMOKE:-0}" = 1 ]; then
  OUT=${OUT%/}-smoke EPOCHS=1 BUDGET=5 MAX_EVAL=24 FRESH=1
  LIMITS=(--max-train-samples 64 --max-eval-samples "$MAX_EVAL" --logging-steps 1)
fi
[ "${FRESH:-0}" = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"
need_shared data/korquad-v1.0-dev.part-a.json eval/evaluate-korquad-v1.0.py
write_eval_split "$DATA" "$OUT/eval.json" KorQuAD_v1.0_dev "$MAX_EVAL"

echo "== train: scratch BERT ($SIZE, vocab $VOCAB), $EPOCHS epochs, lr $LR, budget $BUDGET min -> $OUT/model"
train "$OUT/train.log" --from-scratch "$SIZE" --vocab-size "$VOCAB" --train-file "$DATA" "${SPLIT_FLAGS[@]}" \
  --output-dir "$OUT/model" --resume --max-length 256 --doc-stride 128 --batch-size 16 \
  --epochs "$EPOCHS" --learning-rate "$LR" --budget-minutes "$BUDGET" --eval-batch-size 64 --no-progress \
  "${LIMITS[@]}"

score korquad evaluate-korquad-v1.0.py
