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
# No cluster is created at install (database pods start on their volume's clone). The AWS CLI
# fetches s3:// sources, with IRSA, EKS Pod Identity or keys. Pod Identity credentials
# (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) need AWS CLI 2.15.0 or later, and Debian 12's is
# 2.9.19: it comes from bookworm-backports (2.17.3 when written), with the awscrt it needs, and
# the build fails on one older than 2.15.0. pgBackRest (Debian 12's, 2.45) archives and backs up
# databases with backups: archive-push in the database pod, the backup Job.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" ca-certificates \
      pgbackrest awscli/bookworm-backports python3-awscrt/bookworm-backports \
 && rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/bookworm-backports.list \
 && aws_cli=$(aws --version | sed -n 's|^aws-cli/\([0-9.]*\) .*|\1|p') \
 && { dpkg --compare-versions "$aws_cli" ge 2.15.0 \
      || { echo "AWS CLI '$aws_cli' cannot read EKS Pod Identity credentials (needs 2.15.0 or later)" >&2; exit 1; }; } \
 && pgbackrest version \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH
COPY --chmod=0755 bin/${TARGETARCH}/devdb-restore /usr/local/bin/devdb-restore
COPY --chmod=0755 postgres-db/start.sh /usr/local/bin/devdb-start
USER 999:999
