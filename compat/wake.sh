#!/usr/bin/env bash
# A third-party driver wakes an asleep database on its first try with its default timeouts:
# `devdb up`, a project and a database, the database stopped, then asyncpg (from the venv
# compat/run.sh made; `asyncpg.connect`'s default timeout is 60 s) connects through the proxy
# and queries, once asleep and then four clients at once. The database is named by
# `options=endpoint=` (asyncpg sends no SNI to an IP address). Exits non-zero on any failure.
#
#   bash compat/wake.sh        # after compat/run.sh (CI runs both)
#
# Environment: DEVDB_BIN (default target/debug/devdb, with devdb-controller beside it),
# COMPAT_DIR (where compat/run.sh keeps its venv; default target/compat).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${COMPAT_DIR:-$REPO/target/compat}/venv
DEVDB_BIN=${DEVDB_BIN:-$REPO/target/debug/devdb}
[[ -x $VENV/bin/python ]] || { echo "wake: no venv at $VENV: run compat/run.sh first" >&2; exit 2; }
[[ -x $DEVDB_BIN ]] || { echo "wake: no devdb at $DEVDB_BIN" >&2; exit 2; }

source "$REPO/testkit/devdb-up.sh"
devdb_workdir wake-compat
devdb_up --domain db.wake.test

"$DEVDB_BIN" project create shop >/dev/null
"$DEVDB_BIN" db create kate-pg --project shop >/dev/null
"$DEVDB_BIN" --json db show kate-pg >"$TMP/db.json"

stop() { "$DEVDB_BIN" db stop kate-pg >/dev/null; }
status() { "$DEVDB_BIN" --json db show kate-pg | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }

run() { # clients: connect that many at once to the asleep database, one query each
  "$VENV/bin/python" - "$TMP/db.json" "$TMP/data/certs/ca.crt" "$PROXY" "$1" <<'EOF'
import asyncio, json, ssl, sys
import asyncpg

db, ca, port, clients = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # by IP address: the certificate names *.db.wake.test

async def one():
    # asyncpg's own defaults (timeout=60): the first try must succeed.
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=db["username"], password=db["password"],
                                 database=db["database"], ssl=context,
                                 server_settings={"options": "endpoint=kate-pg"})
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

async def main():
    answers = await asyncio.gather(*(one() for _ in range(clients)))
    assert answers == [1] * clients, answers

asyncio.run(main())
EOF
}

stop
[[ $(status) == stopped ]] || { echo "wake: kate-pg did not stop" >&2; exit 1; }
run 1
[[ $(status) == running ]] || { echo "wake: asyncpg's connection did not wake kate-pg" >&2; exit 1; }
stop
run 4
[[ $(status) == running ]] || { echo "wake: four asyncpg clients did not wake kate-pg" >&2; exit 1; }
echo "wake: asyncpg woke an asleep database on the first try, alone and four at once"
