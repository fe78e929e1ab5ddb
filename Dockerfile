# syntax=docker/dockerfile:1
# fanout gateway image: `gateway run` on port 8080 as uid 10001.
#   docker build -t ghcr.io/fanout/gateway:0.1.0 .
# The same image runs the demo backends: `python -m services.catalog --host 0.0.0.0 --port 8101`.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- builder: build the project's wheel and install it with its dependencies into a venv ---
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir /wheels/*.whl \
    && python -m compileall -q /opt/venv

# --- runtime: the venv only; no compiler, no pip cache, no sources ---
FROM ${PYTHON_IMAGE} AS runtime

# Log lines as JSON objects (with request_id and trace_id) for the cluster's log shipper.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_LOG_FORMAT=json

RUN groupadd --system --gid 10001 fanout \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin fanout

COPY --from=builder /opt/venv /opt/venv
# A default routes file so that `docker run` serves something; Kubernetes mounts its own
# ConfigMap over /etc/fanout.
COPY examples/demo.yaml /etc/fanout/gateway.yaml

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/fanout/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
