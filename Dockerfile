# syntax=docker/dockerfile:1
# The pgcurator operator image: `docker build -t pgcurator/pgcurator:0.1.0 .`
# Stage 1 installs the package and its dependencies into a virtualenv with hack/image-install.sh
# (CI runs that same script into a fresh virtualenv: tests/unit/test_image.py). Every dependency
# comes as a wheel, so no compiler is involved. Stage 2 is a clean slim image with only that
# virtualenv, running as an unprivileged user; the chart adds a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY hack/image-install.sh hack/image-install.sh
RUN sh hack/image-install.sh /opt/pgcurator /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pgcurator" \
      org.opencontainers.image.description="Keeps PostgreSQL partitions, indexes, vector indexes and TLS certificates in their declared shape"
RUN groupadd --system --gid 10001 pgcurator \
 && useradd --system --uid 10001 --gid pgcurator --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pgcurator
COPY --from=build /opt/pgcurator /opt/pgcurator
ENV PATH=/opt/pgcurator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PGCURATOR_HTTP_ADDRESS=0.0.0.0:8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["pgcurator"]
CMD ["run"]
