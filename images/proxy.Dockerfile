# devdb-proxy: the TLS-terminating PostgreSQL proxy behind the database load balancer.
# Built by images/build.sh from prebuilt binaries (bin/<arch>/ in the build context), on
# Debian 12, as the chart runs it: user 65532, a read-only root file system, no capabilities.
# The proxy needs no CA certificates (it only serves TLS, and follows the controller over the
# cluster's network in plain HTTP with a token): nothing is installed.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
ARG TARGETARCH
RUN groupadd --system --gid 65532 devdb \
 && useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin devdb
COPY --chmod=0755 bin/${TARGETARCH}/devdb-proxy /usr/local/bin/devdb-proxy
USER 65532:65532
EXPOSE 5432 9187
ENTRYPOINT ["/usr/local/bin/devdb-proxy"]
