#!/usr/bin/env bash
# Container start (the image's ENTRYPOINT, under tini). Also runs outside a container, from the checkout.
#  1. `qa-serving serve`: TorchServe on loopback (inference 8085, management 8086, metrics 8082) with the
#     archives of model_store/ (QA_MODEL_STORE), token authorization on; waits until the models are ready.
#     Arguments of the container go to it: e.g. `--models qa --workers 2 --threads 1`.
#  2. deploy/gateway.py on 0.0.0.0:$QA_PORT (8080): checks the client key (the file $QA_API_KEY_FILE, a
#     mounted secret, or $QA_API_KEY), forwards to TorchServe with TorchServe's own key, 504 after
#     $QA_DEADLINE_S. It exits when TorchServe exits; SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
run_dir="${QA_RUN_DIR:-runs/torchserve}"
# What `qa-serving serve --stop` does (SIGTERM to TorchServe, whose shutdown hook stops its workers),
# without importing qa_serving (~15 s on a busy machine): the stop must fit the container's grace period.
stop_torchserve() {
    local pid
    pid=$(sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p' "$run_dir/server.json" 2>/dev/null) || true
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
}
trap stop_torchserve EXIT
trap 'exit 143' TERM INT  # during the start: stop what has started (the EXIT trap)

qa-serving serve --store "${QA_MODEL_STORE:-model_store}" --run-dir "$run_dir" \
    --inference-port 8085 --management-port 8086 "$@"

python deploy/gateway.py --listen "0.0.0.0:${QA_PORT:-8080}" --run-dir "$run_dir" \
    --inference 127.0.0.1:8085 --management 127.0.0.1:8086 --deadline "${QA_DEADLINE_S:-150}" --watch &
gateway=$!
trap 'kill -TERM "$gateway" 2>/dev/null || true' TERM INT
status=0
wait "$gateway" || status=$?
wait "$gateway" 2>/dev/null || true  # when a signal interrupted the first wait
exit "$status"
