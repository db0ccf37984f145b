# syntax=docker/dockerfile:1
# mintsoft-bridge: one image for `serve` (the default) and `worker --config FILE`.
#   docker build -t mintsoft-bridge .
#   docker run -p 8080:8080 -e BRIDGE_API_KEYS_FILE=/run/secrets/api-keys ... mintsoft-bridge

# --- build: a virtualenv with the bridge and its dependencies --------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mintsoft-bridge
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bridge ./bridge
# Bytecode is compiled here because the running container's root filesystem is read-only.
RUN /opt/mintsoft-bridge/bin/pip install --compile . \
 && /opt/mintsoft-bridge/bin/pip uninstall --yes pip setuptools

# --- run: the virtualenv only; no compiler, no pip, no source tree ---------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --no-create-home \
        --home-dir /var/lib/mintsoft-bridge --shell /usr/sbin/nologin bridge \
 && install -d -o bridge -g bridge -m 0750 /var/lib/mintsoft-bridge
COPY --from=build /opt/mintsoft-bridge /opt/mintsoft-bridge
ENV PATH=/opt/mintsoft-bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080 \
    BRIDGE_SPOOL_PATH=/var/lib/mintsoft-bridge/spool.sqlite3 \
    BRIDGE_LOG_FORMAT=json
# The spool: webhooks kept while the broker is away. It must outlive the container.
VOLUME ["/var/lib/mintsoft-bridge"]
WORKDIR /var/lib/mintsoft-bridge
USER 10001:10001
EXPOSE 8080
# slim has no curl; the interpreter is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mintsoft-bridge"]
CMD ["serve"]
