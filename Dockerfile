# syntax=docker/dockerfile:1
#
# One image for every Kova component; the command selects the role:
#
#   kova placement serve ...   the Placement API (runs as the non-root user)
#   kova operator run ...      scheduler, conductor, host monitor (non-root)
#   kova agent run ...         the compute agent (the Helm chart runs it as
#                              root: it talks to the node's libvirtd socket
#                              and writes disks into the node's instance dir)
#
#   docker build -t kova:dev .
#
# NOT BUILT ON KOVA'S DEVELOPMENT MACHINES: they have no Docker engine. This
# file is checked by hadolint and tests/unit/packaging/test_dockerfile.py, and
# hack/kind-e2e.sh builds it where Docker exists (see docs/install.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------
# builder: compile Kova's wheel and libvirt-python (a C extension that links
# against libvirt) into /wheels. Nothing of this stage but the wheels reaches
# the final image.
FROM ${PYTHON_IMAGE} AS builder

# Debian package versions are not pinned (hadolint DL3008): the base image's
# tag fixes the Debian release, and exact pins break at every point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml setup.py README.md ./
COPY kova ./kova
COPY operator ./operator
COPY agents ./agents
COPY crds ./crds
COPY placement ./placement
COPY api ./api
# setup.py maps operator/ onto kova.operator (the symlink kova/operator is
# copied as a symlink and resolves inside /src); every dependency is built or
# downloaded as a wheel too, so the runtime stage installs with --no-index.
RUN pip wheel --wheel-dir /wheels '.[libvirt]'

# --------------------------------------------------------------------------
# runtime: Python, the libvirt client library (libvirt0; no daemon), qemu-img
# for the agent's overlays, tini as PID 1, and the wheels installed into
# /opt/kova. No compiler, no headers, no source tree.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="kova" \
      org.opencontainers.image.description="Kova: virtual machines on bare-metal Kubernetes (Placement, operator, compute agent)" \
      org.opencontainers.image.licenses="Apache-2.0"

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libvirt0 qemu-utils tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kova \
 && useradd --system --uid 10001 --gid kova --home-dir /var/lib/kova --create-home \
      --shell /usr/sbin/nologin kova

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/kova/bin:$PATH

# The wheels are bind-mounted from the builder for this one step, so they
# never become a layer of the final image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/kova \
 && /opt/kova/bin/pip install --no-index --find-links /wheels 'kova[libvirt]' \
 && kova --version \
 && python -c 'import libvirt, kova.agents, kova.api, kova.operator, kova.placement'

WORKDIR /var/lib/kova
USER 10001:10001
EXPOSE 8778 9090
ENTRYPOINT ["/usr/bin/tini", "--", "kova"]
CMD ["--help"]
