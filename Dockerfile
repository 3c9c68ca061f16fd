# syntax=docker/dockerfile:1
#
# eprd, the Elastic Package Registry drop-in, as a container image.
#
#   docker build -t eprd .
#   docker run --rm -p 8080:8080 -v "$PWD/packages:/packages/package-registry:ro" eprd
#
# Packages are read from /packages/package-registry (mount them, or bake them in with a derived
# image), the configuration from /package-registry/config.yml. Every eprd flag can be set through
# its EPR_* variable (-log-level -> EPR_LOG_LEVEL); arguments after the image name are eprd flags.
#
# Baking packages and their index into a derived image (containers then start without reading a
# package: the index stamps sizes and mtimes, which image layers keep):
#
#   FROM eprd
#   COPY --chown=10001:10001 packages/ /packages/package-registry/
#   RUN ["eprd", "-dry-run"]   # validates, and writes the index into EPR_CACHE_DIR (/var/cache/eprd)
#
# Run the -dry-run with the same package settings the containers use (EPR_REQUIRE_PACKAGE_SIGNATURES,
# -disable-package-validation, config.yml's package_paths): the index is kept per settings.
# EPR_WORKERS: serving processes on the one port; set it to the container's CPU limit.

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: install eprd and its dependencies (binary wheels) into a virtual environment --------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY eprd/ eprd/

# A regular (non-editable) install; pip itself is not needed at run time.
RUN python -m venv /opt/eprd \
    && /opt/eprd/bin/pip install --no-cache-dir -c /src/constraints.txt /src \
    && /opt/eprd/bin/pip uninstall --yes pip \
    && /opt/eprd/bin/eprd -version

# --- runtime: the virtual environment on a clean base, run as an unprivileged user --------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="eprd" \
      org.opencontainers.image.description="Drop-in re-implementation of the Elastic Package Registry" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed numeric ids, so that Kubernetes' runAsNonRoot can check them without a runAsUser.
RUN groupadd --system --gid 10001 eprd \
    && useradd --system --no-log-init --uid 10001 --gid eprd \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin eprd \
    && mkdir -p /packages/package-registry /var/cache/eprd \
    && chown eprd:eprd /var/cache/eprd

COPY --from=build /opt/eprd /opt/eprd
COPY config/config.docker.yml /package-registry/config.yml

ENV PATH=/opt/eprd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EPR_ADDRESS=0.0.0.0:8080 \
    EPR_CONFIG=/package-registry/config.yml \
    EPR_CACHE_DIR=/var/cache/eprd \
    EPR_WORKERS=1

WORKDIR /package-registry
USER 10001:10001

# 8080: the registry API. 9000: Prometheus /metrics, when EPR_METRICS_ADDRESS=0.0.0.0:9000.
EXPOSE 8080 9000

# Slim images have no curl: the check uses Python's standard library, follows EPR_ADDRESS's port
# and HTTPS (EPR_TLS_CERT + EPR_TLS_KEY), and ignores any HTTP(S)_PROXY of the environment.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('EPR_TLS_CERT') and os.environ.get('EPR_TLS_KEY')); port = os.environ.get('EPR_ADDRESS', ':8080').rpartition(':')[2]; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; u.build_opener(u.ProxyHandler({}), u.HTTPSHandler(context=c)).open(('https' if tls else 'http') + '://127.0.0.1:' + port + '/health', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["eprd"]
