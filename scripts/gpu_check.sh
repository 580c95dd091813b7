#!/usr/bin/env bash
# GPU checks for a lent device machine (not CI): fine-tune all-MiniLM-L6-v2 on the training articles of
# the real SQuAD v1.1 / v2.0 subsets at max_length 384 / stride 128 in bf16, full and --freeze-encoder,
# then the handler-free inference path on CUDA (torch fp16 / bf16). Results land in $OUT (or ./gpu_out).
#
# Expects (made by scripts/gpu_prepare.sh, carried with the run; docs/real-data.md "GPU"): .whl/ wheels of the pinned stack for the device's
# Python, .gpu/minilm (the encoder, fp16 to fit the transfer limit), .gpu/data/*.json.gz (../shared data).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT" /tmp/data
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
for f in .gpu/data/*.gz; do gunzip -c "$f" > "/tmp/data/$(basename "${f%.gz}")"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

train() {  # name, extra flags...
  local name=$1; shift
  python3 -m qa_serving.cli.main train --model .gpu/minilm --output-dir "/tmp/runs/$name" \
    --max-length 384 --doc-stride 128 --precision bf16 --batch-size 32 --eval-batch-size 128 \
    --logging-steps 100 --no-progress "$@" 2>&1 | grep -vE "Warning|warn" | tee "$OUT/$name.log" | grep -E "^\[eval\]|Error|error" 
  cp "/tmp/runs/$name/eval_results.json" "$OUT/$name.json" 2>/dev/null
}
SECONDS=0
train squad_v1 --train-file /tmp/data/squad-v1.1-dev.part-a.json --epochs 3 --learning-rate 1e-4
echo "squad_v1 done at ${SECONDS}s"
train squad_v1_frozen --train-file /tmp/data/squad-v1.1-dev.part-a.json --epochs 3 --learning-rate 1e-3 --freeze-encoder
echo "frozen done at ${SECONDS}s"
train squad_v2 --train-file /tmp/data/squad-v2.0-dev.part-a.json --handle-impossible-answer --epochs 3 --learning-rate 1e-4
echo "squad_v2 done at ${SECONDS}s"
# Inference throughput of the shared path on CUDA (fp32 / bf16 / fp16) on the v1 eval articles.
python3 scripts/gpu_infer.py /tmp/runs/squad_v1 /tmp/data/squad-v1.1-dev.part-a.json 2>&1 | grep -v arn | tee "$OUT/infer.txt"
echo "all done at ${SECONDS}s"
