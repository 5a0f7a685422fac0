# MediSentinel FHIR R4 server. Used by docker-compose.yml (with PostgreSQL 16);
# alone: docker build -t medisentinel . && docker run -p 8080:8080 medisentinel  (SQLite in /var/lib/medisentinel/data)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (the packages listed in pyproject.toml, plus its readme).
COPY pyproject.toml README.md ./
COPY app ./app
COPY fhir_profiles ./fhir_profiles
COPY migrations ./migrations
COPY hl7_adapters ./hl7_adapters
COPY agents ./agents
COPY audit ./audit
RUN pip install . \
    && useradd --system --create-home --home-dir /var/lib/medisentinel --uid 10001 medisentinel \
    && install -d -o medisentinel -g medisentinel -m 700 /var/lib/medisentinel/data
# data/ exists in the image, owned by the user, so a volume mounted there (docker-compose.yml)
# starts with that owner and the server can write data/master.key into it.

# Runs unprivileged; its working directory is writable, so the default SQLite URL
# (sqlite:///data/medisentinel.db) works when no MEDISENTINEL_DATABASE_URL is given.
USER medisentinel
WORKDIR /var/lib/medisentinel
ENV MEDISENTINEL_HOST=0.0.0.0 \
    MEDISENTINEL_PORT=8080
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/fhir/metadata', timeout=4)"]

# `serve` applies the Alembic migrations first (several workers/containers may start at once:
# on PostgreSQL one migrates, the others wait on an advisory lock).
CMD ["medisentinel", "serve", "--host", "0.0.0.0"]
