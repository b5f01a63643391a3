# One image for every taskfan role: worker nodes and producers.
#   docker build -t taskfan .
#   docker run --rm -e TASKFAN_REDIS_URL=redis://host:6379/0 taskfan            # a worker node
#   docker run --rm -e TASKFAN_REDIS_URL=... taskfan taskfan enqueue ... --wait  # a producer
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The package first, so that editing examples does not reinstall it.
COPY pyproject.toml README.md ./
COPY taskfan ./taskfan
COPY producer ./producer
COPY worker ./worker
# Extras, comma-separated: `docker build --build-arg TASKFAN_EXTRAS=rq .` for nodes
# that drain RQ queues (--rq-queue); none by default.
ARG TASKFAN_EXTRAS=""
RUN pip install .${TASKFAN_EXTRAS:+[$TASKFAN_EXTRAS]}

# Task modules live in the working directory: nodes import them from there
# (TASKFAN_PATH, default ".").
COPY examples ./examples

# Run as an unprivileged user.
RUN useradd --create-home --uid 1000 taskfan
USER taskfan

CMD ["taskfan", "worker"]
