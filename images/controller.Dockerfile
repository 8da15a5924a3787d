# devdb-controller: the REST API, CLI endpoint, dashboard and the Kubernetes controllers.
# Built by images/build.sh from prebuilt binaries (bin/<arch>/ in the build context), on
# Debian 12 (the glibc the binaries are built against), as the chart runs it: user 65532, a
# read-only root file system, no capabilities, arguments from the chart.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
ARG TARGETARCH
# CA certificates: the controller verifies the proxy (sampling), S3 and the Kubernetes API.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 devdb \
 && useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin devdb
COPY --chmod=0755 bin/${TARGETARCH}/devdb-controller /usr/local/bin/devdb-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/devdb-controller"]
