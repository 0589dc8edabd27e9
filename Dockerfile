# modelq: one image for the API, every kind of worker and Flower (the command picks the role).
# CPU torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 for CUDA.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=all

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MODELQ_HOME=/var/lib/modelq \
    MODELQ_API_HOST=0.0.0.0 \
    HF_HUB_OFFLINE=1

RUN useradd --system --create-home --home-dir /var/lib/modelq modelq
WORKDIR /opt/modelq
# torch first, from the index chosen above, so no dependency pulls another build of it.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md requirements.lock ./
COPY src ./src
# Every other package at the version the test suite passed with (torch's line is left out: the
# build above chose its variant).
RUN grep -v '^torch==' requirements.lock > /tmp/constraints.txt && \
    pip install -c /tmp/constraints.txt ".[${EXTRAS}]"

USER modelq
EXPOSE 8000 5555
# On 0.0.0.0 the API needs MODELQ_API_KEYS (`modelq keys new NAME`); without keys it refuses to start.
CMD ["modelq", "api"]
