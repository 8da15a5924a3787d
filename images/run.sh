#!/usr/bin/env bash
# Runs DevDB's three images here as the chart and the controller run them on Kubernetes, with
# podman, end to end: no cluster can run here, so an in-memory API server
# (loadtest/apiserver.py) stands in for Kubernetes, and this script does what kubelet, the Job
# controller and the CSI driver would (run the pods the controller wrote, copy a volume for a
# clone, report pods ready and snapshots taken). The pods themselves come from where a cluster
# gets them: the controller and proxy Deployments as the chart renders them (helm, the chart's
# defaults but the domain and images), the restore Job and the database's StatefulSet as the
# controller container wrote them to the API server; images/pod.py runs each with its user ids,
# read-only root file system, dropped capabilities, arguments, environment and volumes.
#
# What it checks, in order (each failure stops it with the reason and the logs):
#   1. the controller container starts in kube mode with a proxy TLS Secret that has no ca.crt,
#      and serves (/healthz);
#   2. a project whose dump (pg_dump -Fc of 500 rows, over HTTP) the restore Job's two
#      containers fetch and restore into a volume first changed as kubelet's fsGroup walk
#      changes it; the controller takes the Job's success and the snapshot to `ready`;
#   3. a database, whose container starts on a copy of that volume (changed by the fsGroup walk
#      again) in a network namespace of its own, with its own password;
#   4. the proxy container routes a psql session, over TLS by SNI, with the PROXY v2 header the
#      NLB sends, to that database, and the rows are there;
#   5. the controller container still serves.
#
# Usage (root, Debian 12 with buildah, podman, runc, debootstrap, PostgreSQL 15 and psql, and
# a Python with helm-python-sdk and PyYAML, $PYTHON or python3; the tests install one at
# target/python-tools/bin/python3): bash images/run.sh [--binaries DIR] [--keep]
#   --binaries DIR  build the images from these binaries (default target/debug, built if absent)
#   --keep          leave the containers, network namespace and work directory for a look
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

binaries=target/debug keep=false
while [ $# -gt 0 ]; do
    case "$1" in
        --binaries) binaries="$2"; shift 2 ;;
        --keep) keep=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "images/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

step() { echo "--- [images $(date +%T)] $*"; }
work=$(mktemp -d /tmp/devdb-images-XXXXXX)
chmod 0755 "$work"
netns=devdb-img-$$
pids=()
cleanup() {
    local status=$?
    if [ "$status" != 0 ]; then
        echo "images/run.sh: FAILED; logs:" >&2
        for c in $(podman ps -a --format '{{.Names}}' | grep '^devdb-img-' || true); do
            echo "==== container $c" >&2
            podman logs "$c" 2>&1 | tail -40 >&2 || true
        done
        for log in "$work"/*.log; do [ -f "$log" ] && { echo "==== $log" >&2; tail -40 "$log" >&2; }; done
    fi
    $keep && { echo "kept: $work, namespace $netns" >&2; exit "$status"; }
    for c in $(podman ps -a --format '{{.Names}}' | grep '^devdb-img-' || true); do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    ip netns del "$netns" 2>/dev/null || true
    ip link del "vh-$$" 2>/dev/null || true
    [ -n "${PGDATA_SRC:-}" ] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl stop -D "$PGDATA_SRC" -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

for port in 5432 8080 9187; do
    if ss -ltnH "sport = :$port" | grep -q .; then
        echo "images/run.sh: port $port is in use here; the chart's containers listen on it (host network)" >&2
        exit 1
    fi
done

step "the images"
if [ ! -x "$binaries/devdb-controller" ] || [ ! -x "$binaries/devdb-proxy" ] || [ ! -x "$binaries/devdb-restore" ]; then
    cargo build --locked -p devdb-controller -p devdb-proxy -p devdb-restore
fi
mapfile -t images < <(bash images/build.sh --binaries "$binaries" --make-base --registry localhost/devdb --tag test)
controller_image=${images[0]} proxy_image=${images[1]} db_image=${images[2]}

step "the proxy's certificates (devdb certs)"
domain=db.devdb-images.test
"$binaries/devdb" certs --domain "$domain" --out "$work/proxy-certs" >/dev/null 2>&1 \
    || target/debug/devdb certs --domain "$domain" --out "$work/proxy-certs" >/dev/null

step "the API server, holding what the chart and the cluster would: classes, the release's Secrets"
token=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
admin_token=$(head -c 60 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
secret_key=$(head -c 72 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48)
b64() { base64 -w0 <"$1"; }
cat >"$work/seed.json" <<EOF
[
 {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "devdb-gp3"}, "provisioner": "ebs.csi.aws.com"},
 {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "devdb-snapshots"}, "driver": "ebs.csi.aws.com", "deletionPolicy": "Delete"},
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "devdb"}},
 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "devdb-admin-token", "namespace": "devdb"}, "data": {"token": "$(printf %s "$admin_token" | base64 -w0)"}},
 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "devdb-controller-key", "namespace": "devdb"}, "data": {"key": "$(printf %s "$secret_key" | base64 -w0)"}},
 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "devdb-proxy-tls", "namespace": "devdb"}, "type": "kubernetes.io/tls",
  "data": {"tls.crt": "$(b64 "$work/proxy-certs/server.crt")", "tls.key": "$(b64 "$work/proxy-certs/server.key")"}}
]
EOF
python3 loadtest/apiserver.py --listen 127.0.0.1:0 --tls-dir "$work/api-tls" \
    --seed "$work/seed.json" --ready-file "$work/api.addr" >"$work/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/api.addr" ] && break; sleep 0.1; done
api="https://$(cat "$work/api.addr")"
kube() { curl -sf --cacert "$work/api-tls/ca.crt" -H "Authorization: Bearer $token" "$@"; }
kube_patch() { kube -X PATCH -H 'Content-Type: application/merge-patch+json' -d "$2" "$api$1" >/dev/null; }
pod() { python3 images/pod.py --api "$api" --api-ca "$work/api-tls/ca.crt" --token "$token" --namespace "$@"; }

step "the chart's Deployments (helm template: the chart's defaults, but the domain and these images)"
"${PYTHON:-python3}" - "$work" "$domain" "$controller_image" "$proxy_image" "$db_image" <<'EOF'
import json, sys, yaml, helm_python as helm
work, domain, controller, proxy, db = sys.argv[1:]
def image(name):
    repository, tag = name.rsplit(":", 1)
    return {"repository": repository, "tag": tag}
values = {
    "domain": domain,
    "storage": {"checkSnapshotCrds": False},
    # Backends are resolved from /etc/hosts here (--add-host), which matches no name ending in
    # a dot: the relative names.
    "controller": {"clusterDomain": ""},
    "images": {"controller": image(controller), "proxy": image(proxy), "postgresDb": {**image(db), "pgVersion": 15}},
}
manifests = helm.Chart.load("charts/devdb").render(values, name="devdb", namespace="devdb", is_install=True)
for path, text in manifests.items():
    for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
        if doc and doc.get("kind") == "Deployment":
            json.dump(doc, open(f"{work}/{doc['metadata']['name']}.json", "w"))
EOF

step "1. the controller container (kube runtime; the proxy's TLS Secret has no ca.crt)"
pod devdb --spec "$work/devdb-controller.json" --name devdb-img-controller --work "$work/controller" --detach >/dev/null
for _ in $(seq 150); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:8080/healthz >/dev/null || { echo "the controller does not serve" >&2; exit 1; }
api_call() { curl -sf -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' "$@"; }

step "2. a project: its dump over HTTP, its restore Job's containers on an fsGroup-walked volume"
export PGDATA_SRC=$work/source/data
install -d -o postgres "$work/source"
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$PGDATA_SRC" -U postgres -A trust >/dev/null
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl start -D "$PGDATA_SRC" -w -l "$work/source/log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$work/source'" >/dev/null
psql -X -q -h "$work/source" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;"
mkdir -p "$work/dumps"
pg_dump -h "$work/source" -U postgres -d postgres -Fc -f "$work/dumps/shop.dump"
(cd "$work/dumps" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/dumps.log" 2>&1) &
pids+=($!)
for _ in $(seq 50); do dump_port=$(ss -ltnpH | sed -n "s/.*127.0.0.1:\([0-9]*\) .*pid=${pids[-1]},.*/\1/p"); [ -n "$dump_port" ] && break; sleep 0.1; done
api_call -X POST http://127.0.0.1:8080/v1/projects \
    -d "{\"name\": \"shop\", \"dbVersion\": \"15\", \"backupLocation\": \"http://127.0.0.1:$dump_port/shop.dump\"}" >/dev/null
jobs=/apis/batch/v1/namespaces/devdb-shop/jobs
for _ in $(seq 100); do kube "$api$jobs" | python3 -c 'import json,sys; sys.exit(not json.load(sys.stdin)["items"])' && break; sleep 0.2; done
kube "$api$jobs" | python3 -c 'import json,sys; json.dump(json.load(sys.stdin)["items"][0], sys.stdout)' >"$work/job.json"
job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$work/job.json")
golden=$(python3 -c 'import json,sys; print(next(v["persistentVolumeClaim"]["claimName"] for v in json.load(open(sys.argv[1]))["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v))' "$work/job.json")
# What kubelet does to a new volume for the pod's fsGroup (999): the group owns it, may write it,
# and directories are setgid.
fsgroup_walk() { chgrp -R 999 "$1"; chmod -R g+rwX "$1"; find "$1" -type d -exec chmod g+s {} +; }
mkdir -p "$work/volumes/$golden"
fsgroup_walk "$work/volumes/$golden"
pod devdb-shop --spec "$work/job.json" --name devdb-img-restore --work "$work/restore" --claim "$golden=$work/volumes/$golden"
# The Job controller, then the CSI driver: the Job succeeded, the snapshot is taken.
kube_patch "$jobs/$job/status" '{"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}'
snapshots=/apis/snapshot.storage.k8s.io/v1/namespaces/devdb-shop/volumesnapshots
for _ in $(seq 100); do
    snapshot=$(kube "$api$snapshots" | python3 -c 'import json,sys; i=json.load(sys.stdin)["items"]; print(i[0]["metadata"]["name"] if i else "")')
    [ -n "$snapshot" ] && break
    sleep 0.2
done
[ -n "$snapshot" ] || { echo "the controller took no snapshot after the restore" >&2; exit 1; }
kube_patch "$snapshots/$snapshot/status" '{"status": {"readyToUse": true, "restoreSize": "1Gi"}}'
for _ in $(seq 150); do
    status=$(api_call http://127.0.0.1:8080/v1/projects/shop | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = ready ] && break
    sleep 0.2
done
[ "$status" = ready ] || { echo "the project is $status, not ready" >&2; exit 1; }

step "3. a database: its container on a copy of the volume, in a network namespace of its own"
api_call -X POST http://127.0.0.1:8080/v1/databases -d '{"name": "kate-pg", "project": "shop"}' >/dev/null
sets=/apis/apps/v1/namespaces/devdb-shop/statefulsets
for _ in $(seq 150); do kube "$api$sets/kate-pg" >"$work/sts.json" 2>/dev/null && break; sleep 0.2; done
[ -s "$work/sts.json" ] || { echo "the controller made no StatefulSet" >&2; exit 1; }
claim=$(python3 -c 'import json,sys; print(next(v["persistentVolumeClaim"]["claimName"] for v in json.load(open(sys.argv[1]))["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v))' "$work/sts.json")
cp -a "$work/volumes/$golden" "$work/volumes/$claim"
fsgroup_walk "$work/volumes/$claim"
ip netns add "$netns"
ip link add "vh-$$" type veth peer name "vp-$$"
ip link set "vp-$$" netns "$netns"
ip addr add 10.250.1.1/30 dev "vh-$$" && ip link set "vh-$$" up
ip -n "$netns" addr add 10.250.1.2/30 dev "vp-$$" && ip -n "$netns" link set "vp-$$" up && ip -n "$netns" link set lo up
pod devdb-shop --spec "$work/sts.json" --name devdb-img-kate-pg --work "$work/kate-pg" --claim "$claim=$work/volumes/$claim" \
    --network "ns:/run/netns/$netns" --pod-ip 10.250.1.2 --detach >/dev/null
for _ in $(seq 150); do /usr/lib/postgresql/15/bin/pg_isready -q -h 10.250.1.2 -p 5432 && break; sleep 0.2; done
/usr/lib/postgresql/15/bin/pg_isready -h 10.250.1.2 -p 5432 >/dev/null || { echo "the database container does not accept connections" >&2; exit 1; }
# The StatefulSet controller: the pod is ready.
kube_patch "$sets/kate-pg/status" '{"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1}}'
for _ in $(seq 150); do
    status=$(api_call http://127.0.0.1:8080/v1/databases/kate-pg | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = running ] && break
    sleep 0.2
done
[ "$status" = running ] || { echo "the database is $status, not running" >&2; exit 1; }
api_call http://127.0.0.1:8080/v1/databases/kate-pg >"$work/database.json"

step "4. the proxy container: psql by SNI with the NLB's PROXY header"
pod devdb --spec "$work/devdb-proxy.json" --name devdb-img-proxy --work "$work/proxy" --detach \
    --add-host devdb-controller:127.0.0.1 --add-host kate-pg.devdb-shop.svc:10.250.1.2 >/dev/null
for _ in $(seq 150); do curl -sf http://127.0.0.1:9187/readyz >/dev/null && break; sleep 0.2; done
# What the NLB does: a PROXY v2 header, then the client's bytes, both ways.
python3 - "$work/relay.port" <<'EOF' &
import socket, struct, sys, threading
listener = socket.create_server(("127.0.0.1", 0))
open(sys.argv[1], "w").write(str(listener.getsockname()[1]))
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
while True:
    client, (ip, port) = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", 5432))
    addresses = socket.inet_aton("198.51.100.7") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 5432)
    upstream.sendall(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
EOF
pids+=($!)
for _ in $(seq 50); do [ -s "$work/relay.port" ] && break; sleep 0.1; done
read -r user password dbname < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["username"], d["password"], d["database"])' "$work/database.json")
rows=""
for _ in $(seq 50); do
    rows=$(PGPASSWORD=$password psql -X -At "host=kate-pg.$domain hostaddr=127.0.0.1 port=$(cat "$work/relay.port") sslmode=require user=$user dbname=$dbname" \
        -c "SELECT count(*) FROM items" 2>"$work/psql.log") && break
    sleep 0.2
done
[ "$rows" = 500 ] || { echo "through the proxy: '$rows' rows, not 500: $(cat "$work/psql.log")" >&2; exit 1; }
echo "images: psql through the proxy container read $rows rows from the database container"

step "5. the controller container still serves"
curl -sf http://127.0.0.1:8080/healthz >/dev/null
[ "$(podman inspect -f '{{.State.Running}}' devdb-img-controller-controller)" = true ]
echo "images: all checks passed"
