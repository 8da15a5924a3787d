#!/usr/bin/env bash
# DevDB benchmark: on this machine, real PostgreSQL with TLS, devdb-proxy, PgBouncer (session
# mode, terminating client TLS) and a relay that does no TLS work (socat: TLS end to end between
# pgbench and PostgreSQL, the floor for any proxy on the same cores), measured in one run,
# alternating between them:
#   (a) pgbench -S throughput, latency and the middle process's own CPU time per transaction
#       (from /proc/<pid>/stat over each run) at several client counts,
#   (b) connection setup rate and latency (devdb-loadtest --mode connect),
#   (c) the proxy's memory with 1k/5k/10k idle sessions (devdb-loadtest --mode idle; the proxy
#       relays them to a transaction-mode PgBouncer so PostgreSQL needs no 10k backends).
# Writes loadtest/results/{results.md,results.json,bench.png}: ratios to direct TLS.
#
#   bash loadtest/bench.sh              # about 12 minutes on 2 cores
#   QUICK=1 bash loadtest/bench.sh      # a 1-minute smoke run (fewer, shorter rounds)
#   PROFILE=1 bash loadtest/bench.sh    # also perf-profile the proxy (results/profile-*.txt)
#   SECTIONS=pgbench bash loadtest/bench.sh   # only (a); also: connect, idle (space-separated)
#   ROUNDS=3 SECONDS_PER_RUN=10 CLIENTS="1 8" # override the pgbench rounds, run length, counts
#
# Needs: PostgreSQL 15 server binaries, pgbench, pgbouncer, socat, gnuplot, jq (apt-get install
# postgresql-15 postgresql-contrib pgbouncer socat gnuplot-nox jq). Runs servers as the postgres
# user.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/loadtest/results"
work=$(mktemp -d /tmp/devdb-bench.XXXXXX)
chmod 755 "$work" && chown postgres "$work"
pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}
domain=db.bench.test
password=bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
pg_port=55432; proxy_port=56432; bouncer_port=56433; pool_port=56434; relay_port=56435; admin_port=59187
if [ -n "${QUICK:-}" ]; then
    seconds=3; rounds=1; clients_list="1 8"; idle_list="1000"
else
    seconds=10; rounds=2; clients_list="1 8 32 64"; idle_list="1000 5000 ${IDLE_MAX:-10000}"
fi
seconds=${SECONDS_PER_RUN:-$seconds}; rounds=${ROUNDS:-$rounds}; clients_list=${CLIENTS:-$clients_list}
sections=${SECTIONS:-pgbench connect idle}
run_section() { [[ " $sections " == *" $1 "* ]]; }

as_pg() { runuser -u postgres -- "$@"; }
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    as_pg "$pg_bin/pg_ctl" stop -D "$work/pg" -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
# Each proxied session holds two descriptors (client and backend): 10k sessions need 20k+.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_sessions=$(( ($(ulimit -n) - 200) / 2 ))

echo "building release binaries…"
(cd "$root" && cargo build --release -q -p devdb-proxy -p devdb-loadtest && cargo build --release -q -p devdb-controller --bin devdb)
bin="$root/target/release"

echo "starting PostgreSQL, devdb-proxy and PgBouncer in $work…"
"$bin/devdb" certs --domain "$domain" --out "$work/certs" >/dev/null
chown -R postgres "$work/certs"
echo "$password" > "$work/pw" && chown postgres "$work/pw"
as_pg "$pg_bin/initdb" -D "$work/pg" -U bench --pwfile="$work/pw" --auth=scram-sha-256 >/dev/null
cat >> "$work/pg/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = 256MB
ssl = on
ssl_cert_file = '$work/certs/server.crt'
ssl_key_file = '$work/certs/server.key'
CONF
as_pg "$pg_bin/pg_ctl" start -D "$work/pg" -l "$work/pg.log" -w >/dev/null
export PGPASSWORD="$password"
as_pg env PGPASSWORD="$password" "$pg_bin/psql" -X -q -h "$work" -p "$pg_port" -U bench -d postgres -c "CREATE DATABASE bench"
as_pg env PGPASSWORD="$password" pgbench -q -i -s 10 -h "$work" -p "$pg_port" -U bench bench 2>/dev/null
secret=$(as_pg env PGPASSWORD="$password" "$pg_bin/psql" -X -At -h "$work" -p "$pg_port" -U bench -d postgres \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
echo "\"bench\" \"$secret\"" > "$work/userlist.txt"

bouncer() { # name port mode [tls]
    cat > "$work/$1.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = $3
max_client_conn = 20000
default_pool_size = 100
logfile = $work/$1.log
pidfile = $work/$1.pid
INI
    if [ -n "${4:-}" ]; then
        printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n' \
            "$work/certs/server.crt" "$work/certs/server.key" >> "$work/$1.ini"
    fi
    chown postgres "$work/$1.ini"
    # runuser starts from the default soft limit (1024 descriptors): raise it for the pooler.
    as_pg bash -c "ulimit -n $(ulimit -Hn) && exec pgbouncer -d '$work/$1.ini'"
}
bouncer bouncer "$bouncer_port" session tls
bouncer pool "$pool_port" transaction

cat > "$work/routes.json" <<JSON
{ "routes": [
  { "name": "bench", "backend": "127.0.0.1:$pg_port" },
  { "name": "idle", "backend": "127.0.0.1:$pool_port" }
] }
JSON
# PROXY_ARGS: extra flags for the proxy (e.g. PROXY_ARGS="--worker-threads 1" to compare).
# shellcheck disable=SC2086
RUST_LOG=warn "$bin/devdb-proxy" ${PROXY_ARGS:-} --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
    --domain "$domain" --tls-cert "$work/certs/server.crt" --tls-key "$work/certs/server.key" \
    --routes-file "$work/routes.json" > "$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
for pidfile in "$work/bouncer.pid" "$work/pool.pid"; do pids+=("$(cat "$pidfile")"); done
# The floor: a relay that copies bytes and does no TLS work (a process per connection, so its
# CPU time is its children's, counted once they exit).
socat "TCP-LISTEN:$relay_port,bind=127.0.0.1,fork,reuseaddr,nodelay" "TCP:127.0.0.1:$pg_port,nodelay" &
relay_pid=$!
pids+=("$relay_pid")
declare -A middle=([proxy]=$proxy_pid [pgbouncer]=$(cat "$work/bouncer.pid") [relay]=$relay_pid)
# utime + stime + cutime + cstime, in clock ticks.
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

declare -A conninfo=(
    [direct]="host=127.0.0.1 port=$pg_port sslmode=require user=bench dbname=bench"
    [proxy]="host=bench.$domain hostaddr=127.0.0.1 port=$proxy_port sslmode=require user=bench dbname=bench"
    [pgbouncer]="host=127.0.0.1 port=$bouncer_port sslmode=require user=bench dbname=bench"
    [relay]="host=127.0.0.1 port=$relay_port sslmode=require user=bench dbname=bench"
)
declare -A loadtarget=(
    [direct]="--addr 127.0.0.1:$pg_port"
    [proxy]="--addr 127.0.0.1:$proxy_port --domain $domain --names bench"
    [pgbouncer]="--addr 127.0.0.1:$bouncer_port"
)
targets="direct proxy pgbouncer"
results="$work/results.jsonl"
: > "$results"

if run_section pgbench; then
echo "(a) pgbench -S, ${seconds}s per run, $rounds round(s), alternating"
for clients in $clients_list; do
    jobs=$(( clients < 2 ? 1 : 2 ))
    for round in $(seq "$rounds"); do
        for target in direct proxy pgbouncer relay; do
            pid=${middle[$target]:-}
            before=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
            report=$(pgbench -n -S -c "$clients" -j "$jobs" -T "$seconds" "${conninfo[$target]}" 2>&1 || true)
            sleep 0.3 # the relay's children exit and are counted
            after=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
            tps=$(awk '/tps = .*without initial connection time/ {print $3}' <<<"$report")
            txns=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$report" | cut -d/ -f1)
            latency=$(awk '/latency average/ {print $4}' <<<"$report")
            cpu_us=$(awk -v t="$((after - before))" -v hz="$ticks_per_second" -v n="${txns:-0}" \
                'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print 0 }')
            echo "  clients $clients round $round $target: ${tps:-failed} tps, ${latency:-?} ms, ${cpu_us} µs CPU/txn"
            echo "{\"test\":\"pgbench\",\"clients\":$clients,\"target\":\"$target\",\"tps\":${tps:-0},\"latency_ms\":${latency:-0},\"cpu_us_per_txn\":$cpu_us}" >> "$results"
        done
    done
done
fi

if [ -n "${PROFILE:-}" ]; then
    # An extra, unrecorded run: perf slows the process it samples.
    clients=${clients_list##* }
    echo "profiling the proxy under pgbench -S -c $clients"
    perf record -q -e cpu-clock -F 999 -g -p "$proxy_pid" -o "$work/perf.data" -- sleep $((seconds - 1)) >/dev/null 2>&1 &
    perf_pid=$!
    pgbench -n -S -c "$clients" -j 2 -T "$seconds" "${conninfo[proxy]}" >/dev/null 2>&1 || true
    wait "$perf_pid" || true
    mkdir -p "$out"
    perf report -i "$work/perf.data" --no-children --stdio --percent-limit 1.5 2>/dev/null | grep -v '^$' \
        > "$out/profile-proxy-$clients-clients.txt" || true
    perf report -i "$work/perf.data" --no-children --stdio --sort dso 2>/dev/null \
        | grep -E "^ +[0-9.]+%  " > "$out/profile-proxy-by-object.txt" || true
fi

if run_section connect; then
echo "(b) connection setup: devdb-loadtest --mode connect, 4 clients, ${seconds}s"
for round in $(seq "$rounds"); do
    for target in $targets; do
        # shellcheck disable=SC2086
        "$bin/devdb-loadtest" ${loadtarget[$target]} --user bench --password "$password" --dbname bench \
            --mode connect --clients 4 --duration "${seconds}s" --warmup 1s --quiet --json "$work/connect.json" >/dev/null || true
        jq -c --arg t "$target" '{test:"connect", target:$t, per_second, p50_ms:.connect.p50_ms, p99_ms:.connect.p99_ms, errors}' \
            "$work/connect.json" >> "$results"
        echo "  round $round $target: $(tail -n1 "$results")"
    done
done
fi

if run_section idle; then
echo "(c) proxy memory with idle sessions"
for sessions in $idle_list; do
    if [ "$sessions" -gt "$max_sessions" ]; then
        echo "  $sessions sessions need more descriptors than the limit here ($(ulimit -n)): measuring $max_sessions"
        sessions=$max_sessions
    fi
    "$bin/devdb-loadtest" --addr "127.0.0.1:$proxy_port" --domain "$domain" --names idle --user bench \
        --password "$password" --dbname bench --mode idle --clients "$sessions" --duration 2s \
        --watch-pid "$proxy_pid" --quiet --json "$work/idle.json" >/dev/null || true
    jq -c --argjson n "$sessions" '{test:"idle", sessions:$n, opened:.transactions, errors, kib_per_session:(.memory.bytes_per_session/1024), rss_mib:(.memory.rss_after_bytes/1048576)}' \
        "$work/idle.json" >> "$results"
    echo "  $sessions sessions: $(tail -n1 "$results")"
    sleep 2
done
fi

mkdir -p "$out"
machine="$(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), $(pgbouncer --version | head -n1)"
cp "$results" "$out/results.jsonl"
python3 "$root/loadtest/summarize.py" "$results" "$out" "$machine" "${QUICK:+QUICK=1 }${SECTIONS:+SECTIONS=\"$SECTIONS\" }bash loadtest/bench.sh"
cat "$out/results.md"
