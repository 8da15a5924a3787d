#!/usr/bin/env bash
# Driver compatibility suite: runs a documented subset of asyncpg's OWN test suite twice, once
# directly against PostgreSQL 15 over TLS and once through devdb-proxy (routed by SNI), and fails
# when any test that passes directly does not pass through the proxy (compat/compare.py).
#
# What it does, in order:
#   1. installs asyncpg (pinned, the cp311 manylinux wheel) with pytest into a venv under
#      target/compat/, and takes tests/ from asyncpg's source distribution of the same version;
#   2. builds devdb-proxy and devdb (for `devdb certs`) unless PROXY_BIN / DEVDB_BIN are given;
#   3. starts a throwaway PostgreSQL 15 (initdb in a temporary directory, as the `postgres` user
#      when run as root; random free ports; ssl=on with the `devdb certs` wildcard certificate;
#      scram-sha-256; clients on 127.0.0.1 must use TLS (hostssl), only the proxy's hop from ::1
#      is plaintext);
#   4. starts devdb-proxy with a routes file routing `compat` to that PostgreSQL ([::1]:port);
#   5. adds an /etc/hosts line resolving direct.<domain> and compat.<domain> to 127.0.0.1
#      (asyncpg sends the host name it connects to as SNI, so it must connect by name), and
#      checks both endpoints: TLS on the client side, the server sees what it should;
#   6. runs the subset with PGSSLMODE=require: directly (host direct.<domain>, PostgreSQL's port),
#      then through the proxy (host compat.<domain>, the proxy's port), each to a JUnit XML file;
#   7. re-runs through the proxy, alone, the tests that failed only there (COMPAT_RETRIES times):
#      one that then passes is reported as flaky through the proxy, not as a failure;
#   8. compares the runs (compat/compare.py); the exit status is the comparison's: 1 when a test
#      passes directly but never through the proxy, or when the direct run passed under 80%.
# Everything it started is stopped and the hosts line removed on exit.
#
# Run (as root on Debian 12 with postgresql-15 installed, from any directory):
#   bash compat/run.sh                       # the whole subset, both ways, then the comparison
#   bash compat/run.sh tests/test_listeners.py::TestListeners   # only these (debugging aid)
# Environment:
#   PROXY_BIN   devdb-proxy binary to test (default: cargo build, target/debug/devdb-proxy)
#   DEVDB_BIN   devdb binary for `devdb certs` (default: cargo build, target/debug/devdb)
#   PGBIN       PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PYTHON      Python 3.11 interpreter for the venv (default python3)
#   COMPAT_DIR  venv, asyncpg sources and results (default <repo>/target/compat)
#   COMPAT_RESULTS  where the results go (default $COMPAT_DIR/results)
#   COMPAT_TEST_TIMEOUT   per-test limit in seconds (default 60)
#   COMPAT_RETRIES  how often tests failing only through the proxy are re-run through it
#                   (default 2; one passing on a retry is reported as flaky; 0: no retries)
# Results: $COMPAT_DIR/results/: {direct,proxy}.xml (JUnit), {direct,proxy}.log (pytest output),
# devdb-proxy.log, postgresql.log, {direct,proxy}.seconds (wall time of each run).
# compat/README.md lists the subset and every exclusion with its reason.
set -euo pipefail

ASYNCPG_VERSION=0.32.0
# Every Python package the runs use, pinned (pytest's own dependencies included).
PIP_PACKAGES=(
  "asyncpg==${ASYNCPG_VERSION}"
  pytest==9.2.0
  distro==1.9.0             # imported by asyncpg's test_connect.py
  pytest-timeout==2.4.0
  iniconfig==2.3.1
  packaging==26.4
  pluggy==1.7.0
  pygments==2.21.0
)

# The subset: asyncpg test modules (paths inside the sdist). See compat/README.md.
MODULES=(
  tests/test_connect.py      # connecting, parameters (DSN/env parsing), settings, close/terminate
  tests/test_cursor.py       # cursors (portals, prefetch, scroll)
  tests/test_copy.py         # COPY FROM / TO (large rows, cancellation mid-COPY)
  tests/test_listeners.py    # LISTEN/NOTIFY (Notify pid == get_server_pid()), notices, log listeners
  tests/test_cancellation.py # query cancellation (CancelRequest on a second connection)
  tests/test_timeout.py      # statement and command timeouts (cancel on timeout, close deadlines)
  tests/test_prepare.py      # prepared statements, statement cache
  tests/test_execute.py      # scripts, executemany (pipelined batches, flow control)
  tests/test_transaction.py  # transactions, savepoints, isolation levels
  tests/test_codecs.py       # data type codecs, custom codecs
  tests/test_introspection.py  # type introspection behind the codecs
  tests/test_record.py       # Record objects
  tests/test_exceptions.py   # server errors mapped to exception classes
  tests/test_cache_invalidation.py  # statement cache invalidation after DDL
  tests/test_pool.py         # pools: many concurrent connections, pg_terminate_backend by pid
  tests/test_utils.py        # copy helpers (_mogrify) against the server
  tests/test_logging.py      # query logging
)

# Exclusions (pytest node ids) and why. Each is also in compat/README.md. The run checks that
# every id still names collected tests, so a renamed test cannot silently drop out of this list.
EXCLUDE=(
  # Start clusters of their own (TempCluster / HotStandbyCluster: initdb, pg_ctl, a standby)
  # or rewrite pg_hba.conf and reload; against a running server (PGHOST) asyncpg skips them.
  tests/test_connect.py::TestAuthentication
  tests/test_connect.py::TestGssAuthentication
  tests/test_connect.py::TestSspiAuthentication
  tests/test_connect.py::TestSSLConnection
  tests/test_connect.py::TestClientSSLConnection
  tests/test_connect.py::TestNoSSLConnection
  tests/test_connect.py::TestConnectionAttributes
  tests/test_connect.py::TestConnection::test_connection_ssl_to_no_ssl_server
  tests/test_connect.py::TestConnection::test_connection_sslmode_no_ssl_server
  tests/test_connect.py::TestConnection::test_connection_no_home_dir
  tests/test_codecs.py::TestCodecsLargeOIDs
  tests/test_pool.py::TestPool::test_pool_auth
  tests/test_pool.py::TestPoolReconnectWithTargetSessionAttrs
  tests/test_pool.py::TestHotStandby
  # Puts asyncpg's own TCP fuzzing proxy in front of a cluster it starts; skipped under PGHOST.
  tests/test_listeners.py::TestConnectionTerminationListener
  # Fail directly over TLS too: asyncio's SSL transport still holds the protocol when the test
  # checks that it was freed (they pass with sslmode=disable); both runs here must use TLS.
  tests/test_connect.py::TestConnectionGC
  # Need PostgreSQL 19 (oid8, regdatabase): always skipped on 15.
  tests/test_codecs.py::TestCodecs::test_oid8
  tests/test_codecs.py::TestCodecs::test_regdatabase
  # Time budget: creates thousands of types (server-side DDL, 4-6 s a run); the introspection
  # wire traffic is covered by the rest of test_introspection.py.
  tests/test_introspection.py::TestIntrospection::test_introspection_on_large_db
  # Time budget: sleep-driven client-side timers (pool idle expiry, statement cache lifetime),
  # about 10 s a run; the closes and re-prepares they cause are covered by other pool and
  # prepare tests.
  tests/test_pool.py::TestPool::test_pool_max_inactive_time_01
  tests/test_pool.py::TestPool::test_pool_max_inactive_time_02
  tests/test_pool.py::TestPool::test_pool_max_inactive_time_03
  tests/test_pool.py::TestPool::test_pool_max_inactive_time_04
  tests/test_prepare.py::TestPrepare::test_prepare_24_max_lifetime
  tests/test_prepare.py::TestPrepare::test_prepare_25_max_lifetime_reset
  tests/test_prepare.py::TestPrepare::test_prepare_26_max_lifetime_max_size
)

die() { echo "compat: $*" >&2; exit 2; }
log() { echo "--- $*"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPAT_SRC="$REPO/compat"
COMPAT_DIR=${COMPAT_DIR:-$REPO/target/compat}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PYTHON=${PYTHON:-python3}
TEST_TIMEOUT=${COMPAT_TEST_TIMEOUT:-60}
RETRIES=${COMPAT_RETRIES:-2}
DOMAIN=devdb-compat.test
ROUTE=compat
DIRECT_HOST=direct.$DOMAIN
PROXY_HOST=$ROUTE.$DOMAIN
# /etc/hosts lines this script adds end in "$HOSTS_TAG <pid> ...": each run removes its own line,
# and lines of runs that no longer exist, so concurrent or killed runs leave nothing behind.
HOSTS_TAG="# devdb-compat run"
RESULTS=${COMPAT_RESULTS:-$COMPAT_DIR/results}

[[ -x $PGBIN/postgres ]] || die "no PostgreSQL at $PGBIN (apt-get install postgresql-15, or set PGBIN)"
mkdir -p "$COMPAT_DIR" "$RESULTS"
rm -f "$RESULTS"/*.xml "$RESULTS"/*.log "$RESULTS"/*.seconds

# --- cleanup ------------------------------------------------------------------------------------
TMP=""
PROXY_PID=""
PYTEST_PID=""
PG_STARTED=""
HOSTS_ADDED=""
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
drop_hosts_lines() { # pid...: removes the lines those runs added
  local kept pid
  kept=$(cat /etc/hosts)
  for pid in "$@"; do kept=$(grep -vF -- "$HOSTS_TAG $pid " <<<"$kept" || true); done
  # Rewritten in place (not sed -i, not mv): /etc/hosts is often a bind mount.
  printf '%s\n' "$kept" >/etc/hosts
}
cleanup() {
  local rc=$?
  set +e
  if [[ -n $PYTEST_PID ]]; then
    kill "$PYTEST_PID" 2>/dev/null
    wait "$PYTEST_PID" 2>/dev/null
  fi
  if [[ -n $PROXY_PID ]]; then
    kill "$PROXY_PID" 2>/dev/null
    wait "$PROXY_PID" 2>/dev/null
  fi
  if [[ -n $PG_STARTED ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  [[ -n $HOSTS_ADDED ]] && drop_hosts_lines "$$"
  if [[ -n $TMP ]]; then
    cp "$TMP/pg/postgresql.log" "$RESULTS/postgresql.log" 2>/dev/null
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Python: venv with the pinned packages, asyncpg's tests from its sdist ------------------------
VENV="$COMPAT_DIR/venv"
STAMP="${PIP_PACKAGES[*]}"
if [[ ! -x $VENV/bin/python || $(cat "$VENV/.compat-stamp" 2>/dev/null) != "$STAMP" ]]; then
  log "installing ${PIP_PACKAGES[*]} into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # --only-binary: asyncpg from its wheel (the sdist is only read for tests/).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: "${PIP_PACKAGES[@]}"
  echo "$STAMP" >"$VENV/.compat-stamp"
fi
"$VENV/bin/python" -c 'import asyncpg, sys; assert asyncpg.__version__ == sys.argv[1], asyncpg.__version__' \
  "$ASYNCPG_VERSION"

SUITE="$COMPAT_DIR/asyncpg-$ASYNCPG_VERSION"
if [[ ! -f $SUITE/tests/__init__.py ]]; then
  log "downloading the asyncpg $ASYNCPG_VERSION source distribution for its tests/"
  rm -rf "$SUITE" "$COMPAT_DIR/sdist"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check \
    --no-binary :all: --no-deps "asyncpg==$ASYNCPG_VERSION" -d "$COMPAT_DIR/sdist"
  mkdir -p "$SUITE"
  # Only tests/: the sdist's asyncpg/ package (uncompiled) must not shadow the installed wheel.
  tar -xzf "$COMPAT_DIR/sdist/asyncpg-$ASYNCPG_VERSION.tar.gz" -C "$SUITE" \
    --strip-components=1 "asyncpg-$ASYNCPG_VERSION/tests"
fi
# Our own pytest configuration (not the sdist's pyproject.toml, which is not extracted).
cat >"$SUITE/pytest.ini" <<'EOF'
[pytest]
addopts = --assert=plain --strict-markers --tb=short --import-mode=importlib -p no:cacheprovider
filterwarnings = default
EOF

# --- binaries -----------------------------------------------------------------------------------
if [[ -z ${PROXY_BIN:-} || -z ${DEVDB_BIN:-} ]]; then
  log "cargo build -p devdb-proxy -p devdb-controller (devdb-proxy, devdb)"
  (cd "$REPO" && cargo build -q -p devdb-proxy -p devdb-controller --bin devdb-proxy --bin devdb)
fi
PROXY_BIN=${PROXY_BIN:-$REPO/target/debug/devdb-proxy}
DEVDB_BIN=${DEVDB_BIN:-$REPO/target/debug/devdb}
[[ -x $PROXY_BIN ]] || die "no proxy binary at $PROXY_BIN"
[[ -x $DEVDB_BIN ]] || die "no devdb binary at $DEVDB_BIN"

# --- temporary directory, certificates, ports ---------------------------------------------------
TMP=$(mktemp -d /tmp/devdb-compat.XXXXXX)
chmod 755 "$TMP"
"$DEVDB_BIN" certs --domain "$DOMAIN" --out "$TMP/certs" >/dev/null
# Everything PostgreSQL writes or must own lives under $TMP/pg (owned by postgres when root).
mkdir -p "$TMP/pg/data" "$TMP/pg/ssl" "$TMP/pg/sock"
cp "$TMP/certs/server.crt" "$TMP/certs/server.key" "$TMP/pg/ssl/"
chmod 700 "$TMP/pg/data"
chmod 600 "$TMP/pg/ssl/server.key"
if [[ $(id -u) == 0 ]]; then chown -R postgres: "$TMP/pg"; fi

read -r PG_PORT PROXY_PORT ADMIN_PORT < <("$VENV/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
PGPASSWORD_VALUE=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')

# --- PostgreSQL 15 --------------------------------------------------------------------------------
log "starting PostgreSQL ($("$PGBIN/postgres" --version)) on 127.0.0.1:$PG_PORT"
printf '%s\n' "$PGPASSWORD_VALUE" >"$TMP/pwfile"
chmod 644 "$TMP/pwfile"
as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -U postgres --pwfile="$TMP/pwfile" -E UTF8 \
  --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
rm -f "$TMP/pwfile"
# Clients reach PostgreSQL over IPv4 and must use TLS (hostssl); the proxy reaches it over IPv6
# loopback ([::1], its route's backend) in plaintext, as it does in production. So a test
# connection without TLS cannot authenticate in the direct run either.
cat >"$TMP/pg/data/pg_hba.conf" <<EOF
local   all all                trust
hostssl all all 127.0.0.1/32   scram-sha-256
host    all all ::1/128        scram-sha-256
EOF
cat >>"$TMP/pg/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1,::1'
port = $PG_PORT
unix_socket_directories = '$TMP/pg/sock'
ssl = on
ssl_cert_file = '$TMP/pg/ssl/server.crt'
ssl_key_file = '$TMP/pg/ssl/server.key'
password_encryption = 'scram-sha-256'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
jit = off
logging_collector = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/postgresql.log" -w -t 60 start >/dev/null \
  || { cat "$TMP/pg/postgresql.log" >&2; die "PostgreSQL did not start"; }
PG_STARTED=1

# --- devdb-proxy ------------------------------------------------------------------------------------
cat >"$TMP/routes.json" <<EOF
{ "routes": [ { "name": "$ROUTE", "backend": "[::1]:$PG_PORT" } ] }
EOF
log "starting $PROXY_BIN on 127.0.0.1:$PROXY_PORT (route $ROUTE -> [::1]:$PG_PORT)"
NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$PROXY_BIN" \
  --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --domain "$DOMAIN" --tls-cert "$TMP/certs/server.crt" --tls-key "$TMP/certs/server.key" \
  --routes-file "$TMP/routes.json" >"$RESULTS/devdb-proxy.log" 2>&1 &
PROXY_PID=$!
"$VENV/bin/python" - "$ADMIN_PORT" <<'EOF' || { cat "$RESULTS/devdb-proxy.log" >&2; die "the proxy did not become ready"; }
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/readyz"
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
EOF

# --- host names -------------------------------------------------------------------------------------
# asyncpg sends the host it connects to as SNI (and sends none for an IP address), so it must
# connect by a name under --domain that resolves to 127.0.0.1. The direct run uses a name too, so
# the two runs differ only in the port they reach.
resolves_here() { getent ahostsv4 "$1" | awk '{ print $1; exit }' | grep -qx '127\.0\.0\.1'; }
if [[ -w /etc/hosts ]]; then
  # Our own line even when another run's line is there: that run removes its line when it exits.
  stale=()
  for pid in $(grep -oE -- "$HOSTS_TAG [0-9]+ " /etc/hosts | awk '{ print $NF }'); do
    kill -0 "$pid" 2>/dev/null || stale+=("$pid")
  done
  ((${#stale[@]} == 0)) || drop_hosts_lines "${stale[@]}"
  HOSTS_ADDED=1
  printf '127.0.0.1 %s %s %s %s (compat/run.sh, removed when it exits)\n' \
    "$DIRECT_HOST" "$PROXY_HOST" "$HOSTS_TAG" "$$" >>/etc/hosts
fi
resolves_here "$DIRECT_HOST" && resolves_here "$PROXY_HOST" \
  || die "$DIRECT_HOST and $PROXY_HOST must resolve to 127.0.0.1: run as root, or add them to /etc/hosts"

# --- preflight: both endpoints answer, over TLS, and reach the same server -------------------------
# The connection parameters of the preflight and of both runs (asyncpg reads these variables).
export PGUSER=postgres PGDATABASE=postgres PGPASSWORD="$PGPASSWORD_VALUE" PGSSLMODE=require
"$VENV/bin/python" - "$DIRECT_HOST" "$PG_PORT" "$PROXY_HOST" "$PROXY_PORT" <<'EOF' \
  || die "preflight failed: see above ($RESULTS/devdb-proxy.log has the proxy's log)"
import asyncio, sys
import asyncpg

async def check(host, port, via_proxy):
    con = await asyncpg.connect(host=host, port=int(port))
    try:
        assert con._transport.get_extra_info("ssl_object") is not None, "client side not TLS"
        ssl, addr = await con.fetchrow(
            "SELECT s.ssl, inet_client_addr()::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()")
        # Directly: TLS up to PostgreSQL from 127.0.0.1. Through the proxy: TLS to the proxy,
        # then the proxy's plaintext hop from ::1.
        want = (False, "::1/128") if via_proxy else (True, "127.0.0.1/32")
        assert (ssl, addr) == want, f"{host}:{port}: ssl={ssl} client={addr}, expected {want}"
        print(f"preflight {host}:{port}: TLS, server sees ssl={ssl} from {addr}")
    finally:
        await con.close()

asyncio.run(check(sys.argv[1], sys.argv[2], False))
asyncio.run(check(sys.argv[3], sys.argv[4], True))
EOF

# --- the two runs -----------------------------------------------------------------------------------
if (($#)); then
  SELECTION=("$@")
else
  SELECTION=("${MODULES[@]}")
fi
DESELECT=()
for id in "${EXCLUDE[@]}"; do DESELECT+=("--deselect=$id"); done
if ! (($#)); then
  # pytest ignores a --deselect that matches nothing: check every exclusion against the collection.
  collected=$(cd "$SUITE" && "$VENV/bin/python" -m pytest -c "$SUITE/pytest.ini" --rootdir "$SUITE" \
    --collect-only -q "${SELECTION[@]}" 2>&1) || { echo "$collected" >&2; die "collecting the subset failed"; }
  for id in "${EXCLUDE[@]}"; do
    grep -qF -- "$id" <<<"$collected" || die "exclusion $id matches no collected test (renamed upstream?)"
  done
fi

run_suite() { # name host port pytest-args...
  local name=$1 host=$2 port=$3 start rc secs
  shift 3
  log "asyncpg $ASYNCPG_VERSION tests, $name: PGHOST=$host PGPORT=$port PGSSLMODE=require"
  start=$(date +%s.%N)
  # In the background and waited for, so that a TERM to this script runs the cleanup at once
  # (which stops pytest by this pid: timeout passes the signal on to it).
  # asyncpg's test base uses the running server (RunningCluster) when PGHOST is set; the
  # connection parameters then come from the PG* variables alone.
  env -C "$SUITE" -u PGSERVICE -u PGSERVICEFILE -u PGOPTIONS -u PGSSLROOTCERT -u PGSSLCERT \
    -u PGSSLKEY -u PGTARGETSESSIONATTRS -u PGSSLNEGOTIATION -u USE_UVLOOP \
    PGHOST="$host" PGPORT="$port" PGCONNECT_TIMEOUT=10 \
    timeout -k 10 600 "$VENV/bin/python" -m pytest -c "$SUITE/pytest.ini" --rootdir "$SUITE" \
      -q -rfE --timeout="$TEST_TIMEOUT" --junitxml="$RESULTS/$name.xml" \
      -o junit_suite_name="asyncpg-$name" -o junit_family=xunit1 "$@" \
      >"$RESULTS/$name.log" 2>&1 </dev/null &
  PYTEST_PID=$!
  rc=0
  wait "$PYTEST_PID" || rc=$?
  PYTEST_PID=""
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  # The failures' one-line summaries and pytest's closing line; tracebacks are in the log.
  grep -E '^(FAILED|ERROR) |^[0-9]+ [a-z]+.* in [0-9.]+s' "$RESULTS/$name.log" || tail -n 20 "$RESULTS/$name.log"
  echo "$name run: ${secs} s wall, pytest exit $rc (output: $RESULTS/$name.log)"
  echo "$secs" >"$RESULTS/$name.seconds"
}

compare() { "$VENV/bin/python" "$COMPAT_SRC/compare.py" "$RESULTS/direct.xml" "$RESULTS/proxy.xml" "$@"; }

# Both runs use the database `postgres`, one after the other: asyncpg's tests assume it (e.g.
# test_cache_invalidation opens pools with database='postgres' next to the default connection)
# and drop what they create.
run_suite direct "$DIRECT_HOST" "$PG_PORT" "${DESELECT[@]}" "${SELECTION[@]}"
run_suite proxy "$PROXY_HOST" "$PROXY_PORT" "${DESELECT[@]}" "${SELECTION[@]}"

# Tests that pass directly but failed through the proxy are run again through the proxy, alone,
# up to COMPAT_RETRIES times: one that then passes is reported as flaky, not as a failure.
RETRY_ARGS=()
for ((i = 1; i <= RETRIES; i++)); do
  [[ -f $RESULTS/direct.xml && -f $RESULTS/proxy.xml ]] || break
  mapfile -t again < <(compare --list-regressions "${RETRY_ARGS[@]}")
  ((${#again[@]})) || break
  ((${#again[@]} <= 20)) || { echo "${#again[@]} tests fail only through the proxy: no retry"; break; }
  run_suite "proxy-retry-$i" "$PROXY_HOST" "$PROXY_PORT" "${again[@]}"
  RETRY_ARGS+=(--retry "$RESULTS/proxy-retry-$i.xml")
done

log "comparison (direct $(cat "$RESULTS/direct.seconds") s, proxy $(cat "$RESULTS/proxy.seconds") s wall)"
set +e
compare "${RETRY_ARGS[@]}"
rc=$?
set -e
exit "$rc"
