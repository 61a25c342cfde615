# lambda-sweep: one image for the submit, worker and dashboard services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

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
