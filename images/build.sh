#!/usr/bin/env bash
# Builds DevDB's three images with buildah, from binaries built beforehand:
#   <registry>/devdb-controller:<tag>        devdb-controller   (images/controller.Dockerfile)
#   <registry>/devdb-proxy:<tag>             devdb-proxy        (images/proxy.Dockerfile)
#   <registry>/postgres-db:<tag>-pg<major>   devdb-restore, postgres-db/start.sh and Debian's
#                                            PostgreSQL <major> (images/postgres-db.Dockerfile)
# The names and tags are the chart's defaults (charts/devdb/values.yaml: the tag is the chart's
# appVersion), so a cluster that can pull them installs with no image value set.
#
# Usage: bash images/build.sh [options]
#   --binaries DIR   take devdb-controller, devdb-proxy and devdb-restore from DIR (default: build
#                    them with `cargo build --release --locked` and take target/release)
#   --arch ARCH      the binaries' architecture, amd64 or arm64 (default: this machine's)
#   --tag TAG        image tag (default: the chart's appVersion)
#   --registry REG   name prefix (default: ghcr.io/devdb)
#   --base IMAGE     the Debian 12 base every image starts from (default:
#                    docker.io/library/debian:bookworm-slim; pulled if absent)
#   --make-base      without a registry: make the base with debootstrap (Debian's minbase, about a
#                    minute to a few) and import it under --base's name, unless it exists already
#   --pg-major N     PostgreSQL major of postgres-db (default 15, Debian 12's; others need a base
#                    with the PGDG repository)
#   --base-only      make (or pull) the base and stop: CI starts it early, beside the build
# Needs: buildah (and podman for --make-base; debootstrap). Run as root, or rootless buildah.
# Prints the three image names at the end, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."

binaries="" arch="" tag="" registry="ghcr.io/devdb" base="docker.io/library/debian:bookworm-slim"
make_base=false pg_major=15 base_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --binaries) binaries="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --registry) registry="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        --make-base) make_base=true; shift ;;
        --pg-major) pg_major="$2"; shift 2 ;;
        --base-only) base_only=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "images/build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "--- [images] $*" >&2; }
fail() { echo "images/build.sh: $*" >&2; exit 1; }

command -v buildah >/dev/null || fail "buildah is not installed (Debian: apt-get install buildah podman)"
if [ -z "$arch" ]; then
    case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) fail "unknown machine $(uname -m): pass --arch" ;; esac
fi
[ -n "$tag" ] || tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/devdb/Chart.yaml)
[ -n "$tag" ] || fail "no appVersion in charts/devdb/Chart.yaml: pass --tag"

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    if $make_base; then
        command -v debootstrap >/dev/null || fail "debootstrap is not installed (Debian: apt-get install debootstrap)"
        rootfs=$(mktemp -d)
        log "making $base with debootstrap (bookworm, minbase) in $rootfs"
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2 \
            || fail "debootstrap failed (is deb.debian.org reachable?)"
        tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
        rm -rf "$rootfs"
    else
        log "pulling $base"
        buildah pull --quiet "$base" >/dev/null || fail "cannot pull $base: without a registry, pass --make-base"
    fi
fi

$base_only && exit 0

if [ -z "$binaries" ]; then
    log "building the binaries (cargo build --release)"
    cargo build --release --locked -p devdb-controller -p devdb-proxy -p devdb-restore >&2
    binaries=target/release
fi
for binary in devdb-controller devdb-proxy devdb-restore; do
    [ -x "$binaries/$binary" ] || fail "$binaries/$binary is missing: build it, or pass --binaries"
done

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin/$arch" "$context/postgres-db"
cp "$binaries"/devdb-controller "$binaries"/devdb-proxy "$binaries"/devdb-restore "$context/bin/$arch/"
cp postgres-db/start.sh "$context/postgres-db/"

build() {
    local dockerfile=$1 name=$2
    shift 2
    log "building $name"
    buildah bud --quiet --pull=never --layers --arch "$arch" --build-arg "BASE=$base" --build-arg "TARGETARCH=$arch" \
        "$@" -f "images/$dockerfile" -t "$name" "$context" >/dev/null
    echo "$name"
}
build controller.Dockerfile "$registry/devdb-controller:$tag"
build proxy.Dockerfile "$registry/devdb-proxy:$tag"
build postgres-db.Dockerfile "$registry/postgres-db:$tag-pg$pg_major" --build-arg "PG_MAJOR=$pg_major"
