# syntax=docker/dockerfile:1
# Multi-stage build: phoenix.js and the wheel are built in throwaway stages; the runtime image
# holds only the virtualenv (the package carries its pages, phoenix.js and the nginx
# template) and a non-root user.

FROM node:20-bookworm-slim AS js
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm AS build
WORKDIR /build
RUN python -m venv /opt/switchboard
COPY pyproject.toml setup.py README.md ./
COPY server ./server
COPY channels ./channels
COPY actors ./actors
COPY presence ./presence
COPY static ./static
COPY nginx ./nginx
COPY switchboard ./switchboard
COPY --from=js /build/node_modules/phoenix/priv/static ./node_modules/phoenix/priv/static
RUN /opt/switchboard/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/switchboard/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --home /app --shell /usr/sbin/nologin switchboard
WORKDIR /app
COPY --from=build /opt/switchboard /opt/switchboard
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_PROFILE=prod \
    SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=4000
USER 10001
EXPOSE 4000
# Liveness only: readiness (pub/sub and actors) belongs to the orchestrator's probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4000/health/live', timeout=2).status == 200 else 1)"
# SIGTERM starts a graceful drain; give it SWITCHBOARD_SHUTDOWN_TIMEOUT (30 s) to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard", "serve"]
