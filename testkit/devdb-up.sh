# Sourced by the scripts that test `devdb up` as real processes (compat/wake.sh,
# controller/tests/browser/run.sh): a private work directory ($TMP), three free loopback ports
# ($API, $PROXY, $ADMIN_PORT), `devdb up` in the background until the API answers
# ($DEVDB_SERVER), and on exit everything stopped and removed (the log shown on failure).
#
#   source testkit/devdb-up.sh
#   devdb_workdir NAME                               # $TMP, removed on exit
#   devdb_up --domain db.example.test [more devdb up flags]
#
# Needs DEVDB_BIN (the devdb binary, devdb-controller beside it) and python3.

devdb_workdir() {
  TMP=$(mktemp -d "/tmp/devdb-$1.XXXXXX")
  chmod 755 "$TMP" # instances run as PostgreSQL's user, which must reach their files
  UP_PID=
  trap devdb_up_cleanup EXIT
}

devdb_up() {
  read -r API PROXY ADMIN_PORT < <(python3 -c '
import socket
ports = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
  export DEVDB_SERVER=http://127.0.0.1:$API DEVDB_CONFIG=$TMP/cli.json
  "$DEVDB_BIN" up --data-dir "$TMP/data" --api-listen "127.0.0.1:$API" --proxy-listen "127.0.0.1:$PROXY" \
    --proxy-admin-listen "127.0.0.1:$ADMIN_PORT" "$@" 2>"$TMP/up.log" &
  UP_PID=$!
  for _ in $(seq 150); do curl -sf "$DEVDB_SERVER/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "devdb up did not answer on $DEVDB_SERVER" >&2
  return 1
}

devdb_up_cleanup() {
  local rc=$?
  [[ -n $UP_PID ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
  "$DEVDB_BIN" down --data-dir "$TMP/data" >/dev/null 2>&1 || true
  [[ $rc != 0 ]] && tail -n 30 "$TMP/up.log" >&2
  rm -rf "$TMP"
  exit "$rc"
}
