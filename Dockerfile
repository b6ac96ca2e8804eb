# The prediction gateway: serves the ONNX models in $GATEWAY_MODELS as a GraphQL API.
#
#   docker build -t prediction-gateway .
#   docker run --rm -p 8000:8000 prediction-gateway                       # the example models
#   docker run --rm -p 8000:8000 -v "$PWD/my-models:/models:ro" prediction-gateway
#
# Both stages use the same base image, so the venv built in the first runs in the second.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md constraints.txt ./
COPY gateway/ gateway/
# constraints.txt pins every dependency exactly, so rebuilding gives the same packages. The
# redis extra: replicas share rate-limit counters with GATEWAY_RATE_LIMIT_STORAGE=redis://...
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[redis]"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="prediction-gateway" \
      org.opencontainers.image.description="Serve ONNX models as a typed GraphQL API" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID, so that orchestrators can check runAsNonRoot without /etc/passwd.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_MODELS=/models \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000

COPY --from=builder /opt/venv /opt/venv
# The example repository; mount your own at /models. Owned by root: the gateway only reads it.
COPY models/ /models/

USER 10001:10001
EXPOSE 8000

# Healthy once /readyz answers 200 (every model has a READY version). No curl in slim images,
# so Python's urllib asks, bypassing any HTTP proxy set in the environment; any other answer,
# or no answer, exits 1 with a one-line reason.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.excepthook = lambda t, e, tb: print('unhealthy:', e, file=sys.stderr); url = 'http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8000') + '/readyz'; status = r.build_opener(r.ProxyHandler({})).open(url, timeout=4).status; sys.exit(0 if status == 200 else 'unhealthy: HTTP ' + str(status))"]

CMD ["gateway", "serve"]
