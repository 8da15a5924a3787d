# postgres-db: PostgreSQL from Debian plus DevDB's two entrypoints: `devdb-restore` (restore
# Jobs: fetch a project's dump and restore it into the golden volume) and `devdb-start`
# (database pods: the database's own password, then postgres). Built by images/build.sh from a
# prebuilt devdb-restore (bin/<arch>/ in the build context) and postgres-db/start.sh.
# The postgres user is uid/gid 999, as the controller's pods run it (runAsUser, fsGroup).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
ARG TARGETARCH
# Debian 12 ships PostgreSQL 15; another major needs the PGDG repository in the base.
ARG PG_MAJOR=15
# No cluster is created at install (database pods start on their volume's clone); the AWS CLI
# fetches s3:// sources.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" ca-certificates awscli \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH
COPY --chmod=0755 bin/${TARGETARCH}/devdb-restore /usr/local/bin/devdb-restore
COPY --chmod=0755 postgres-db/start.sh /usr/local/bin/devdb-start
USER 999:999
