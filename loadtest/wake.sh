#!/usr/bin/env bash
# Wake-on-connect benchmark: `devdb up` (release build) on this machine, one database restored
# from a small dump. Each round stops the database (it keeps its data, no process), then times
# psql from start to the first query's answer through the proxy, by SNI with TLS: the proxy
# holds the connection, asks the controller to start the instance, and relays the session once
# it runs. Beside it, the same psql against the database running: the difference is the wake.
# Also reads, from the controller's log, how long the instance took to start (pg_ctl start -w).
# Writes loadtest/results/wake.md.
#
#   bash loadtest/wake.sh             # 20 wakes and 20 connects (about a minute)
#   ROUNDS=50 bash loadtest/wake.sh
#
# Needs: PostgreSQL server binaries and psql; runs as root (instances as the postgres user).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-20}
work=$(mktemp -d /tmp/devdb-wake.XXXXXX)
chmod 755 "$work"
api_port=58080; proxy_port=56532; admin_port=59287
domain=db.wake.test
up_pid=
cleanup() {
    [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
    DEVDB_SERVER=http://127.0.0.1:$api_port "$bin/devdb" down --data-dir "$work/data" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building release binaries…"
(cd "$root" && cargo build --release -q -p devdb-controller)
bin="$root/target/release"
export DEVDB_SERVER=http://127.0.0.1:$api_port DEVDB_CONFIG=$work/cli.json

"$bin/devdb" up --data-dir "$work/data" --domain "$domain" --api-listen "127.0.0.1:$api_port" \
    --proxy-listen "127.0.0.1:$proxy_port" --proxy-admin-listen "127.0.0.1:$admin_port" \
    --idle-stop-after 0s 2>"$work/up.log" &
up_pid=$!
for _ in $(seq 100); do curl -sf "$DEVDB_SERVER/healthz" >/dev/null && break; sleep 0.1; done

# A small dump: 50k rows.
pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}
mkdir -p "$work/src" && chown postgres "$work/src"
runuser -u postgres -- "$pg_bin/initdb" -D "$work/src/pg" -A trust >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" start -D "$work/src/pg" -o "-p 55599 -c listen_addresses='' -k $work/src" -w >/dev/null
runuser -u postgres -- "$pg_bin/psql" -h "$work/src" -p 55599 -d postgres -qc \
    "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 50000) g"
runuser -u postgres -- "$pg_bin/pg_dump" -h "$work/src" -p 55599 -Fc -f "$work/src/shop.dump" postgres
runuser -u postgres -- "$pg_bin/pg_ctl" stop -D "$work/src/pg" -m fast >/dev/null
chmod 755 "$work" "$work/src" && chmod 644 "$work/src/shop.dump"

"$bin/devdb" project create shop --from "file://$work/src/shop.dump" >/dev/null
"$bin/devdb" db create kate-pg --project shop >/dev/null
conninfo=$("$bin/devdb" --json db show kate-pg | python3 -c '
import json, sys
d = json.load(sys.stdin)
keys = ("host", "port", "username", "database", "password")
print("host={} hostaddr=127.0.0.1 port={} user={} dbname={} password={} sslmode=require".format(*(d[k] for k in keys)))')

# Microseconds from psql's start to the answer of `SELECT count(*) FROM items`.
psql_bin=$(command -v psql)
timed() {
    local start end
    start=$(date +%s%N)
    "$psql_bin" "$conninfo" -XAtc "SELECT count(*) FROM items" >/dev/null
    end=$(date +%s%N)
    echo $(( (end - start) / 1000 ))
}

echo "timing $rounds wakes and $rounds connects to the running database…"
: >"$work/wake.us"; : >"$work/running.us"
for _ in $(seq "$rounds"); do
    "$bin/devdb" db stop kate-pg >/dev/null
    timed >>"$work/wake.us"
    timed >>"$work/running.us"
done

python3 - "$work" "$rounds" "$root/loadtest/results/wake.md" <<'PY'
import re, statistics, sys
work, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ms(name):
    return sorted(int(l) / 1000 for l in open(f"{work}/{name}.us") if l.strip())
def pct(xs, p):
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]
wake, running = ms("wake"), ms("running")
unit = {"s": 1000.0, "ms": 1.0, "µs": 0.001}
starts = sorted(float(m.group(1)) * unit[m.group(2)]
                for m in re.finditer(r"\bstarted\b.*?elapsed=([0-9.]+)(ms|µs|s)\b", re.sub(r"\x1b\[[0-9;]*m", "", open(f"{work}/up.log").read())))
rows = [
    ("wake: psql to first answer, database asleep", wake),
    ("connect: psql to first answer, database running", running),
]
lines = [f"# Wake on connect ({rounds} rounds, `bash loadtest/wake.sh`)", "",
         "| | p50 ms | p95 ms | max ms |", "| --- | ---: | ---: | ---: |"]
for label, xs in rows:
    lines.append(f"| {label} | {statistics.median(xs):.0f} | {pct(xs, 95):.0f} | {max(xs):.0f} |")
if starts:
    lines.append(f"| of which the instance's start (until postmaster.pid says ready), from the controller's log | "
                 f"{statistics.median(starts):.0f} | {pct(starts, 95):.0f} | {max(starts):.0f} |")
lines += ["", f"Wake p50 over a running connect: {statistics.median(wake) - statistics.median(running):.0f} ms more "
          f"({statistics.median(wake) / statistics.median(running):.1f}x); target: wake p50 ≤ 1000 ms."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
