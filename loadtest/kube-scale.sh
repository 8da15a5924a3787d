#!/usr/bin/env bash
# The controller's Kubernetes control plane at a thousand databases, measured: the controller
# (kube runtime) against an in-memory API server that counts every request and every byte
# written (loadtest/apiserver.py --simulate: Jobs succeed, snapshots are ready, StatefulSets'
# replicas are ready), sampling the running databases through a real devdb-proxy with
# --proxy-protocol (every route to one real PostgreSQL), with a proxy's activity report every
# 30 s and a route subscription counting what it is sent.
#
# In order: PROJECTS projects of PER_PROJECT databases are created through the API and half of
# each project's databases stopped; once everything has settled the counters are zeroed and the
# controller runs STEADY seconds (steady state); then its leader is killed (SIGKILL) and a
# second replica, running beside it from the start, takes over, and the time until it has
# reconciled everything again is measured. Prints a JSON summary and writes it to
# loadtest/results/kube-scale.json:
#   steady.requests_per_second, steady.bytes_written_per_second, steady.by_request (per verb and
#   resource), monitor tick seconds (p50, max), route bytes pushed per database status change,
#   leader change: seconds until the new leader leads, and until its requests settle.
#
# Usage: bash loadtest/kube-scale.sh    (root, Debian 12 with PostgreSQL 15, from the repository)
# Environment: PROJECTS (20), PER_PROJECT (50), STEADY (600 s), BIN (target/release: built if
# absent; target/debug works, slower), KEEP=1 to keep the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECTS=${PROJECTS:-20} PER_PROJECT=${PER_PROJECT:-50} STEADY=${STEADY:-600} BIN=${BIN:-target/release}
PGBIN=/usr/lib/postgresql/15/bin
step() { echo "--- [kube-scale $(date +%T)] $*" >&2; }

if [ ! -x "$BIN/devdb-controller" ] || [ ! -x "$BIN/devdb-proxy" ]; then
    step "building the release binaries"
    cargo build --release --locked -p devdb-controller -p devdb-proxy
fi
work=$(mktemp -d /tmp/devdb-kube-scale-XXXXXX)
chmod 0755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$work/pg/data" -m immediate >/dev/null 2>&1 || true
    [ "${KEEP:-0}" = 1 ] && echo "kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

step "certificates, the API server (simulating), one PostgreSQL, the proxy"
domain=db.scale.test
"$BIN/devdb" certs --domain "$domain" --out "$work/proxy-certs" >/dev/null 2>&1 || target/debug/devdb certs --domain "$domain" --out "$work/proxy-certs" >/dev/null
cat >"$work/seed.json" <<'EOF'
[
 {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "devdb-gp3"}, "provisioner": "ebs.csi.aws.com"},
 {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "devdb-snapshots"}, "driver": "ebs.csi.aws.com", "deletionPolicy": "Delete"},
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "devdb", "labels": {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}}
]
EOF
python3 loadtest/apiserver.py --listen 127.0.0.1:0 --tls-dir "$work/api-tls" \
    --seed "$work/seed.json" --simulate --ready-file "$work/api.addr" >"$work/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/api.addr" ] && break; sleep 0.1; done
api="https://$(cat "$work/api.addr")"
counters() { curl -sf --cacert "$work/api-tls/ca.crt" "$api/_counters" "$@"; }

install -d -o postgres "$work/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg/data" -U postgres -A trust >/dev/null
pg_port=$(free_port)
runuser -u postgres -- "$PGBIN/pg_ctl" start -D "$work/pg/data" -w -l "$work/pg/log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories='$work/pg' -c max_connections=200 -c fsync=off" >/dev/null
psql -X -q -h "$work/pg" -p "$pg_port" -U postgres -d postgres -c "CREATE ROLE app LOGIN" -c "CREATE DATABASE shop OWNER app"

proxy_port=$(free_port)
python3 - "$work/routes.json" "$PROJECTS" "$PER_PROJECT" "$pg_port" <<'EOF'
import json, sys
path, projects, per, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
routes = [{"name": f"p{p:02d}-db{d:03d}", "backend": f"127.0.0.1:{port}"} for p in range(projects) for d in range(per)]
json.dump({"routes": routes}, open(path, "w"))
EOF
"$BIN/devdb-proxy" --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$(free_port)" --domain "$domain" \
    --tls-cert "$work/proxy-certs/server.crt" --tls-key "$work/proxy-certs/server.key" \
    --routes-file "$work/routes.json" --proxy-protocol >"$work/proxy.log" 2>&1 &
pids+=($!)

step "two controller replicas (kube runtime), sampling through the proxy with the PROXY header"
cat >"$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: scale, cluster: {server: "$api", certificate-authority: $work/api-tls/ca.crt}}]
users: [{name: scale, user: {token: scale}}]
contexts: [{name: scale, context: {cluster: scale, user: scale, namespace: devdb}}]
current-context: scale
EOF
admin_token=$(head -c 60 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
secret_key=$(head -c 72 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48)
controller() {
    local name=$1 port=$2
    KUBECONFIG="$work/kubeconfig" POD_NAME=$name RUST_LOG=info \
    DEVDB_CONTROLLER_DOMAIN=$domain DEVDB_CONTROLLER_STORAGE_CLASS=devdb-gp3 \
    DEVDB_CONTROLLER_VOLUME_SNAPSHOT_CLASS=devdb-snapshots DEVDB_CONTROLLER_NAMESPACE=devdb \
    DEVDB_CONTROLLER_PROXY_SELECTOR=app.kubernetes.io/name=devdb-proxy \
    DEVDB_CONTROLLER_SECRET_KEY=$secret_key DEVDB_CONTROLLER_ADMIN_TOKEN=$admin_token \
    DEVDB_CONTROLLER_MONITOR_THROUGH=127.0.0.1:$proxy_port DEVDB_CONTROLLER_MONITOR_CA=$work/proxy-certs/ca.crt \
    DEVDB_CONTROLLER_MONITOR_PROXY_PROTOCOL=true DEVDB_CONTROLLER_ALLOW_UNENFORCED_NETWORK_POLICIES=true \
        "$BIN/devdb-controller" --runtime kube --api-listen "127.0.0.1:$port" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $!
}
port_a=$(free_port) port_b=$(free_port)
pid_a=$(controller scale-a "$port_a")
for _ in $(seq 300); do grep -q "leading" "$work/scale-a.log" && break; sleep 0.1; done
pid_b=$(controller scale-b "$port_b")
for port in "$port_a" "$port_b"; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

step "$PROJECTS projects of $PER_PROJECT databases, half of each stopped"
python3 loadtest/kube_scale.py populate "http://127.0.0.1:$port_a" "$admin_token" "$PROJECTS" "$PER_PROJECT"

# The monitor's ticks are told apart by phase: populating (every database created and started
# at once) and steady state.
ticks() { sed 's/\x1b\[[0-9;]*m//g' | grep -o 'tick_seconds=[0-9.]*' | cut -d= -f2; }
populated=$(wc -l <"$work/scale-a.log")
head -n "$populated" "$work/scale-a.log" | ticks >"$work/ticks-populate.txt" || true

step "steady state: $STEADY s (two proxies report every running database every 15 s to either replica, one stop and one start a minute, a route subscription following changes)"
counters -X POST >/dev/null
python3 loadtest/kube_scale.py steady "http://127.0.0.1:$port_a,http://127.0.0.1:$port_b" "$admin_token" "$STEADY" "$work/steady.json"
counters >"$work/counters-steady.json"
tail -n +"$((populated + 1))" "$work/scale-a.log" | ticks >"$work/ticks.txt" || true

step "leader change: the leader is killed, the other replica takes over"
counters -X POST >/dev/null
killed=$(date +%s.%N)
kill -9 "$pid_a"
python3 loadtest/kube_scale.py takeover "$work/scale-b.log" "$api" "$work/api-tls/ca.crt" "$killed" "$work/takeover.json"

python3 loadtest/kube_scale.py summary "$work" "$PROJECTS" "$PER_PROJECT" "$STEADY" | tee loadtest/results/kube-scale.json
