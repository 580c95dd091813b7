# qa-serving: TorchServe 0.12 serving the .mar archives of model_store/, behind deploy/gateway.py.
# Installs with scripts/setup.sh (as .ci/run does) and starts with `qa-serving serve` (entrypoint.sh).
#
#   qa-serving archive --model runs/model --name qa            # model_store/qa.mar, baked into the image
#   docker build -t qa-serving .
#   docker run -p 8080:8080 -v $PWD/secret:/run/secrets/qa:ro qa-serving --models qa --workers 2 --threads 1
#   curl -H "Authorization: Bearer $(cat secret/key)" -H 'Content-Type: application/json' \
#        -d '{"question": "...", "context": "..."}' http://127.0.0.1:8080/predictions/qa
#
# GPU: a CUDA base image and the CUDA build of torch, e.g.
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t qa-serving:gpu .
#   docker run --gpus all ... qa-serving:gpu --workers 2 --gpu-ids 0,1
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Where torch comes from: the CPU wheels by default (PyPI's default torch is the CUDA build).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Java 17 for TorchServe's frontend; tini reaps TorchServe's processes and forwards SIGTERM. CUDA base
# images have no Python: install it there.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini ca-certificates \
       $(command -v python3 >/dev/null || echo python3 python3-venv python3-pip) \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 qa
WORKDIR /app
COPY --chown=qa:qa . /app
USER qa
# The same install as CI: a .venv with the project and its extras.
RUN PIP_INDEX_URL="${TORCH_INDEX}" PIP_EXTRA_INDEX_URL=https://pypi.org/simple bash scripts/setup.sh \
    && .venv/bin/qa-serving --help >/dev/null

ENV PATH=/app/.venv/bin:$PATH \
    QA_MODEL_STORE=/app/model_store \
    QA_RUN_DIR=/app/runs/torchserve \
    QA_API_KEY_FILE=/run/secrets/qa/key \
    QA_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"
ENTRYPOINT ["tini", "--", "deploy/docker/entrypoint.sh"]
CMD []
