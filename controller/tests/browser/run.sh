#!/usr/bin/env bash
# The dashboard end to end in a real browser: `devdb up` with API tokens (an admin, kate and
# bob) and one-second sampling, a project restored from a small plain dump, then
# dashboard.test.mjs drives Debian's headless Chromium through playwright-core. It writes a
# screenshot of each page to docs/screenshots/ (SCREENSHOTS, default the repository's).
#
#   bash controller/tests/browser/run.sh     # after cargo build (CI runs it after the tests)
#
# Needs: chromium (/usr/bin/chromium), node and npm, psql and pgbench. Environment: DEVDB_BIN
# (default target/debug/devdb, with devdb-controller beside it), CHROMIUM (default
# /usr/bin/chromium).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
DEVDB_BIN=${DEVDB_BIN:-$REPO/target/debug/devdb}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium} SCREENSHOTS=${SCREENSHOTS:-$REPO/docs/screenshots}
export PATH=/usr/lib/postgresql/15/bin:$PATH
for tool in node npm psql pgbench "$CHROMIUM" "$DEVDB_BIN"; do
  command -v "$tool" >/dev/null || { echo "browser: $tool is missing" >&2; exit 2; }
done
[[ -d $HERE/node_modules/playwright-core ]] || (cd "$HERE" && npm ci --no-audit --no-fund --silent)

TMP=$(mktemp -d /tmp/devdb-browser.XXXXXX)
chmod 755 "$TMP"
UP_PID=
cleanup() {
  local rc=$?
  [[ -n $UP_PID ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
  "$DEVDB_BIN" down --data-dir "$TMP/data" >/dev/null 2>&1 || true
  [[ $rc != 0 ]] && tail -n 30 "$TMP/up.log" >&2
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

read -r API PROXY ADMIN_PORT < <(python3 -c '
import socket
ports = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
token() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
export ADMIN_TOKEN=$(token) KATE_TOKEN=$(token) BOB_TOKEN=$(token)
cat >"$TMP/tokens.json" <<JSON
{"tokens": [{"token": "$ADMIN_TOKEN", "admin": true}, {"token": "$KATE_TOKEN", "owner": "kate"},
            {"token": "$BOB_TOKEN", "owner": "bob"}]}
JSON
# A small shop: the dump the project restores (readable by PostgreSQL's user).
cat >"$TMP/shop.sql" <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
INSERT INTO customers (email, name) VALUES
  ('ada@example.com', 'Ada'), ('grace@example.com', 'Grace'), ('edsger@example.com', 'Edsger');
SQL
chmod 644 "$TMP/shop.sql"

export DEVDB_URL=http://127.0.0.1:$API DEVDB_PROXY_PORT=$PROXY
"$DEVDB_BIN" up --data-dir "$TMP/data" --domain db.browser.test --api-listen "127.0.0.1:$API" \
  --proxy-listen "127.0.0.1:$PROXY" --proxy-admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tokens-file "$TMP/tokens.json" --sample-every 1s 2>"$TMP/up.log" &
UP_PID=$!
for _ in $(seq 150); do curl -sf "$DEVDB_URL/healthz" >/dev/null && break; sleep 0.1; done

DEVDB_SERVER=$DEVDB_URL DEVDB_TOKEN=$ADMIN_TOKEN DEVDB_CONFIG=$TMP/cli.json \
  "$DEVDB_BIN" project create shop --owner kate --from "file://$TMP/shop.sql" >/dev/null

mkdir -p "$SCREENSHOTS"
node "$HERE/dashboard.test.mjs"
