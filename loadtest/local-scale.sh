#!/usr/bin/env bash
# The controller's local runtime at a thousand databases, most of them asleep, measured: the
# latency of GET /v1/databases (an admin's list: every database) and of the dashboard's database
# list (/ui/databases, signed in), the controller's resident memory, and the route table the
# proxies are sent with the memory of a real devdb-proxy holding it.
#
# A clone on the local runtime is a copy of its project's snapshot (a whole PostgreSQL data
# directory, 48 MB for an empty project: a copy on ext4, which has no reflinks), and an
# asleep database keeps it, so a thousand real ones do not fit a small disk. In order:
#   1. PROJECTS empty projects and REAL databases are made through the API (restores, clones,
#      starts), and all but RUNNING of them stopped through the API;
#   2. the controller is stopped (SIGTERM; the instances keep running) and the other
#      TOTAL - REAL databases are inserted into its state database as asleep records, each a
#      copy of a real stopped record of its project with a name, id, port and password of its
#      own (the same schema; no data directory: nothing reads an asleep database's files until
#      it is started);
#   3. the controller starts again on the same data directory: it recovers every record (the
#      running instances adopted), and its log is checked for warnings and errors;
#   4. CALLS sequential calls of the API's list and of the dashboard's list page, the route
#      table (GET /v1/routes, and the first message of the feed a proxy follows), 50 writes of
#      one asleep database's record (PATCH), the memory of the controller and of the proxy
#      (VmRSS, VmHWM), and the controller's CPU share over IDLE seconds with nothing asked of
#      it (supervision, lifecycle checks, sampling). The same calls (SMALL_CALLS of each list)
#      and memory readings are taken at REAL databases too, before the insert, to compare.
# Prints a JSON summary and writes it to loadtest/results/local-scale.json.
#
# Usage: bash loadtest/local-scale.sh    (root, Debian 12 with PostgreSQL 15, from the repository)
# Environment: PROJECTS (4), TOTAL (1000), REAL (40), RUNNING (20), CALLS (200), SMALL_CALLS
# (50), IDLE (60 s), BIN (target/release: built if absent; target/debug works, slower), BUILD
# (what the summary says of the binaries; BIN by default), KEEP=1 to keep the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECTS=${PROJECTS:-4} TOTAL=${TOTAL:-1000} REAL=${REAL:-40} RUNNING=${RUNNING:-20}
CALLS=${CALLS:-200} SMALL_CALLS=${SMALL_CALLS:-50} IDLE=${IDLE:-60} BIN=${BIN:-target/release}
PGBIN=/usr/lib/postgresql/15/bin
step() { echo "--- [local-scale $(date +%T)] $*" >&2; }
helper() { python3 loadtest/local_scale.py "$@"; }

if [ ! -x "$BIN/devdb-controller" ] || [ ! -x "$BIN/devdb-proxy" ]; then
    step "building the release binaries"
    cargo build --release --locked -p devdb-controller -p devdb-proxy
fi
work=$(mktemp -d /tmp/devdb-local-scale-XXXXXX)
chmod 0755 "$work"
data="$work/data"
pids=()
controller_pid=
stop_instances() {
    # Every instance under the data directory, as the PostgreSQL user (what `devdb down` does).
    for pgdata in "$data"/databases/*/data; do
        [ -f "$pgdata/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$pgdata" -m fast >/dev/null 2>&1 || true
    done
}
cleanup() {
    [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null && wait "$controller_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_instances
    [ "${KEEP:-0}" = 1 ] && echo "kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

admin_token=$(head -c 60 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
api_port=$(free_port)
api="http://127.0.0.1:$api_port"
domain=db.scale.test
start_controller() {
    local log=$1
    DEVDB_CONTROLLER_ADMIN_TOKEN=$admin_token RUST_LOG=info NO_COLOR=1 \
        "$BIN/devdb-controller" --runtime local --data-dir "$data" --api-listen "127.0.0.1:$api_port" \
        --domain "$domain" --pg-bin "$PGBIN" >"$log" 2>&1 &
    controller_pid=$!
    for _ in $(seq 600); do curl -sf "$api/healthz" >/dev/null && return; sleep 0.1; done
    echo "the controller did not answer; its log:" >&2
    tail -20 "$log" >&2
    exit 1
}

step "the controller (local runtime, $data) and a proxy following its routes"
start_controller "$work/controller-1.log"
proxy_port=$(free_port)
DEVDB_PROXY_ROUTES_TOKEN=$admin_token RUST_LOG=info,devdb_proxy::routes=debug NO_COLOR=1 \
    "$BIN/devdb-proxy" --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$(free_port)" \
    --domain "$domain" --dev-certs-dir "$work/proxy-certs" --routes-from "$api" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")

step "$PROJECTS projects and $REAL databases through the API, all but $RUNNING of them stopped; the same measurements at $REAL"
helper populate "$api" "$admin_token" "$PROJECTS" "$REAL" "$RUNNING" "$work/populate.json"
sleep 5
helper sample controller-small "$controller_pid" "$work/samples.json"
helper sample proxy-small "$proxy_pid" "$work/samples.json"
asleep=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["stopped_names"][0])' "$work/populate.json")
helper measure "$api" "$admin_token" "$SMALL_CALLS" "$asleep" "$controller_pid" "$work/measure-small.json"
python3 - "$data" "$work/sizes.json" <<'EOF'
import json, os, sys
data, out = sys.argv[1], sys.argv[2]
def size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
databases = os.path.join(data, "databases")
clones = sorted(size(os.path.join(databases, d)) for d in os.listdir(databases))
snapshots = [size(os.path.join(root, d)) for root, dirs, _ in os.walk(os.path.join(data, "projects")) for d in dirs if d.startswith("snapshot-")]
st = os.statvfs(data)
json.dump({"clone_bytes_median": clones[len(clones) // 2], "clone_bytes_max": clones[-1], "clones": len(clones),
           "snapshot_bytes": max(snapshots), "free_bytes": st.f_bavail * st.f_frsize}, open(out, "w"))
EOF

step "the controller stopped; $((TOTAL - REAL)) asleep databases inserted into its state database"
kill -TERM "$controller_pid"
wait "$controller_pid" || true
controller_pid=
helper insert "$data/state/state.db" "$PROJECTS" "$TOTAL" "$REAL"

step "the controller started again on the same data directory"
start_controller "$work/controller-2.log"
helper settle "$api" "$admin_token" "$TOTAL" "$RUNNING" "$work/settle.json"
for _ in $(seq 100); do sed 's/\x1b\[[0-9;]*m//g' "$work/proxy.log" | grep -q "routes=$TOTAL" && break; sleep 0.2; done
sleep 5

step "measuring: $CALLS lists through the API, $CALLS dashboard list pages, the route table"
helper sample controller-1000 "$controller_pid" "$work/samples.json"
helper sample proxy-1000 "$proxy_pid" "$work/samples.json"
helper measure "$api" "$admin_token" "$CALLS" "$asleep" "$controller_pid" "$work/measure.json"

step "the controller left alone for $IDLE s"
helper sample controller-idle-start "$controller_pid" "$work/samples.json"
sleep "$IDLE"
helper sample controller-idle-end "$controller_pid" "$work/samples.json"

# Warnings and errors of the restarted controller.
python3 - "$work/controller-2.log" "$work/proxy.log" "$TOTAL" "$work/log.json" <<'EOF'
import json, re, sys
log, proxy, total, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
lines = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read()).splitlines()
warn = [l for l in lines if " WARN " in l]
error = [l for l in lines if " ERROR " in l]
distinct = sorted({re.sub(r"^\S+\s+\w+\s+", "", l)[:200] for l in warn + error})[:10]
seen = [int(m) for m in re.findall(r"routes=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", open(proxy).read()))]
json.dump({"controller_warnings": len(warn), "controller_errors": len(error), "distinct": distinct,
           "proxy_routes_seen": max(seen) if seen else None}, open(out, "w"))
EOF

method="$REAL databases made through the API (restores, clones, starts, stops); $((TOTAL - REAL)) asleep ones inserted as records into the stopped controller's SQLite state"
helper summary "$work" "$PROJECTS" "$TOTAL" "$REAL" "$RUNNING" "$method" "${BUILD:-$BIN}" | tee loadtest/results/local-scale.json
