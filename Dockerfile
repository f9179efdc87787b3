# Passerelle RSA: production image. Build: docker build -t passerelle-rsa .
# Migrate first, as the role that owns the tables (docs/operations.md, "Two database roles"); it then grants
# the service's role what the service needs, never the right to alter, truncate or disable the audit trigger:
#   docker run --rm -e PASSERELLE_MIGRATION_DATABASE_URL=postgresql+psycopg://passerelle_owner:...@db/passerelle \
#        -e PASSERELLE_DATABASE_URL=postgresql+psycopg://passerelle_app:...@db/passerelle passerelle-rsa passerelle db upgrade
# Run (the service's role only: the image's default does not migrate), the data directory on a named volume
# (the weekly files the e-mailed links point to, the quarantined flux files: they must outlive the container):
#   docker volume create passerelle-data
#   docker run -e PASSERELLE_ENV=prod -e PASSERELLE_DATABASE_URL=postgresql+psycopg://passerelle_app:...@db/passerelle \
#        -e PASSERELLE_NIR_ENCRYPTION_KEYS=... -e PASSERELLE_NIR_HMAC_KEY=... -e PASSERELLE_API_KEY_PEPPER=... \
#        -e PASSERELLE_AUDIT_KEYS=... -v passerelle-data:/var/lib/passerelle -p 8000:8000 passerelle-rsa
# or mount the secrets as files named as the variables and set PASSERELLE_SECRETS_DIR=/run/secrets.
# In prod the service refuses to start while PASSERELLE_DATABASE_URL or a secret is missing, or a secret is weak
# or a placeholder (it names every one at once).
# Swagger UI and ReDoc are served from the image itself (fastapi-offline's files): no CDN at run time.
#
# The base image is pinned by digest (the same bytes at every build; a tag moves). The digest below is the one
# public Dockerfiles give for python:3.11.13-slim-bookworm; it was not pulled here: check it before the first
# build (`docker buildx imagetools inspect python:3.11.13-slim-bookworm`), and when upgrading Python or Debian's
# security fixes, replace tag and digest together (docs/operations.md, "Upgrades").
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# One wheel for the service (migrations included as app/_migrations), wheels for its pinned dependencies.
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PASSERELLE_ENV=prod \
    PASSERELLE_DATA_DIR=/var/lib/passerelle
RUN groupadd --system --gid 10001 passerelle \
 && useradd --system --uid 10001 --gid passerelle --home-dir /var/lib/passerelle --create-home passerelle
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER passerelle
WORKDIR /var/lib/passerelle
# The data directory (PASSERELLE_DATA_DIR): weekly files, quarantine, checkpoints; mount a volume there.
VOLUME ["/var/lib/passerelle"]
EXPOSE 8000
# /ready: database reachable, schema at the latest migration (and on SQLite the audit journal there).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status == 200 else 1)"]
# `serve --no-migrate`: the service never migrates with its own role (it would then own the tables and could
# disable the audit trigger); it starts once `db upgrade` above has run, and refuses (exit 3) before.
CMD ["passerelle", "serve", "--no-migrate", "--host", "0.0.0.0", "--port", "8000"]
