# lambda-sweep: one image for the submit, worker and dashboard services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# A C compiler: a CPU population compiles its fused step (sweep/training/fused_tail.c) on first use, and
# without one trains through PyTorch calls alone, 13-45% slower in the quick start (docs/performance.md).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*

# CPU wheels of torch keep the image small; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# for the GPU profile.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.3,<=2.14.1" "torchvision>=0.18,<=0.29.1"

COPY pyproject.toml README.md ./
COPY sweep ./sweep
RUN pip install .

COPY studies ./studies
RUN useradd --create-home sweep
USER sweep
ENTRYPOINT []
CMD ["sweep", "--help"]
