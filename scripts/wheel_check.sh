#!/usr/bin/env bash
# What a new user gets from a wheel: build it, install it into a fresh virtualenv outside the checkout,
# and from an empty temp folder run export -> archive -> serve -> one HTTP answer -> stop.
# Fails when the wheel holds a top-level package other than qa_serving, or any step fails.
# Usage: bash scripts/wheel_check.sh [PYTHON]   (default: .venv/bin/python, else python3; it builds the wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qa-wheel-check.XXXXXX")
started=$SECONDS
step() { echo "[wheel-check $((SECONDS - started))s] $*"; }
SERVING=
cleanup() {
  if [ -n "$SERVING" ]; then
    (cd "$WORK/app" && "$WORK/venv/bin/qa-serving" serve --stop --run-dir run >/dev/null 2>&1) || true
  fi
  [ -n "${KEEP_WHEEL_CHECK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

step "build the wheel"
# From a copy of the files git tracks or would track: an in-tree build/ could carry stale modules along.
mkdir -p "$WORK/src"
git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$WORK/src"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >/dev/null 2>&1
WHEEL=$(ls "$WORK"/dist/qa_serving-*.whl)
"$PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info/" not in n}
assert tops == {"qa_serving"}, f"top-level packages in the wheel: {sorted(tops)} (only qa_serving allowed)"
for need in ("qa_serving/serving/config.properties", "qa_serving/handlers/qa_handler.py",
             "qa_serving/export/onnx.py", "qa_serving/serving/service.py"):
    assert need in names, f"{need} missing from the wheel"
print(f"wheel: {len(names)} files, one top-level package: qa_serving")
EOF

step "fresh virtualenv outside the checkout: torch (CPU), then the wheel with [onnx,serve]"
python3 -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# --no-compile: byte-compiling torch and transformers would double the install time.
"$VPY" -m pip install -q --no-compile torch==2.13.0   # the CPU build first, as scripts/setup.sh does
"$VPY" -m pip install -q --no-compile "$WHEEL[onnx,serve]"

mkdir -p "$WORK/app"
cd "$WORK/app"
export PATH="$WORK/venv/bin:$PATH" PYTHONNOUSERSITE=1
step "imports from $(pwd): qa_serving.export, no top-level export/handlers"
"$VPY" - <<'EOF'
import importlib.util, qa_serving, qa_serving.export, qa_serving.serving.service
assert "site-packages" in qa_serving.__file__, qa_serving.__file__
for name in ("export", "handlers"):
    assert importlib.util.find_spec(name) is None, f"a top-level {name!r} is importable"
EOF

step "a tiny random model, exported to ONNX"
"$VPY" - <<'EOF'
from qa_serving.core.config import QAConfig
from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer
texts = ["Shakespeare wrote Hamlet in 1600 while living in London.", "Ada Park founded Acme in 1921."] * 20
tokenizer = train_wordpiece_tokenizer(texts, vocab_size=200)
model = scratch_model(tokenizer, "tiny", seed=0)
model.save_pretrained("tiny"); tokenizer.save_pretrained("tiny")
QAConfig(max_length=64, doc_stride=16, max_question_len=16).save("tiny")
EOF
qa-serving export --model tiny --output onnx --skip-parity >/dev/null

step "qa-serving archive + serve (packaged config.properties, free ports)"
qa-serving archive --model onnx --name wt --backend onnx --workers 1
read -r P1 P2 P3 P4 P5 < <("$VPY" -c "from qa_serving.serving import Ports; print(*vars(Ports.free()).values())")
SERVING=1
qa-serving serve --models wt --run-dir run --timeout 240 --inference-port "$P1" --management-port "$P2" \
  --metrics-port "$P3" --grpc-inference-port "$P4" --grpc-management-port "$P5"

step "one HTTP answer"
KEY=$(qa-serving serve --print-key --run-dir run)
"$VPY" - "$P1" "$KEY" <<'EOF'
import json, sys, urllib.request
port, key = sys.argv[1:]
body = json.dumps({"question": "Who wrote Hamlet?", "context": "Shakespeare wrote Hamlet in 1600."}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/predictions/wt", data=body, method="POST",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
with urllib.request.urlopen(req, timeout=60) as resp:
    answer = json.loads(resp.read())
assert resp.status == 200 and set(answer) == {"answer", "score", "start", "end"}, answer
print("served answer:", answer)
EOF

step "stop"
qa-serving serve --stop --run-dir run
SERVING=
step "passed"
