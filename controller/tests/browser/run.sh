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

source "$REPO/testkit/devdb-up.sh"
devdb_workdir browser
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

devdb_up --domain db.browser.test --tokens-file "$TMP/tokens.json" --sample-every 1s
export DEVDB_URL=$DEVDB_SERVER

DEVDB_TOKEN=$ADMIN_TOKEN "$DEVDB_BIN" project create shop --owner kate --from "file://$TMP/shop.sql" >/dev/null

mkdir -p "$SCREENSHOTS"
node "$HERE/dashboard.test.mjs"
