#!/usr/bin/env bash
# Masking throughput: a table of ROWS (1 million) customers (an e-mail and a name each) masked by
# DevDB's rules (email, name) exactly as a restore masks it (restore/examples/mask_table.rs runs
# the restore crate's masking: the rows out with COPY, masked outside the server, back by ctid,
# then VACUUM FULL and ANALYZE), beside a plain `UPDATE … SET col = md5(col)` of the same columns
# followed by the same VACUUM FULL and ANALYZE, on an identical copy, in the same run on the same
# server; and loading the same rows with COPY. Best of ROUNDS (3). Writes
# loadtest/results/masking.md.
#
#   bash loadtest/masking.sh            # about a minute
#   ROWS=200000 ROUNDS=1 bash loadtest/masking.sh
#
# Needs: PostgreSQL 15 server binaries; runs as root (the server as the postgres user).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rows=${ROWS:-1000000}
rounds=${ROUNDS:-3}
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/devdb-masking.XXXXXX)
chmod 755 "$work"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] && chown postgres "$work"

echo "building the masking runner…"
(cd "$root" && cargo build --release -q -p devdb-restore --example mask_table)
rules='[{"table": "t", "column": "email", "strategy": "email"}, {"table": "t", "column": "name", "strategy": "name"}]'
mask() { echo "$rules" | "$root/target/release/examples/mask_table" "$work" 5432 postgres postgres; }

as_pg "$bin/initdb" -D "$work/data" -U postgres --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/log" -w -o "-k $work -p 5432 -c listen_addresses='' -c fsync=off -c max_wal_size=4GB" start >/dev/null
sql() { as_pg "$bin/psql" -h "$work" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
# Seconds a statement takes (as the server reports them), after the setup statements given first.
timed() {
    local statement=${!#} setup=("${@:1:$#-1}") args=()
    for s in "${setup[@]}"; do args+=(-c "$s"); done
    sql -At "${args[@]}" -c '\timing on' -c "$statement" | awk '/^Time:/ {t=$2} END {printf "%.3f", t/1000}'
}

sql -c "CREATE TABLE base AS SELECT g AS id, 'person' || g || '@example.org' AS email, 'First' || g || ' Last' AS name FROM generate_series(1, $rows) g"
sql -c "COPY base TO '$work/base.copy'" -c "DROP TABLE base"

best() { sort -n | head -1; }
md5s=(); masks=(); loads=()
fresh() { sql -c "DROP TABLE IF EXISTS t" -c "CREATE TABLE t (id int, email text, name text)"; }
for round in $(seq "$rounds"); do
    echo "round $round of $rounds…"
    fresh
    loads+=("$(timed "COPY t FROM '$work/base.copy'")")
    sql -c "VACUUM ANALYZE t"
    update=$(timed "UPDATE t SET email = md5(email), name = md5(name)")
    vacuum=$(timed "VACUUM FULL t")
    analyze=$(timed "ANALYZE t")
    md5s+=("$(echo "$update + $vacuum + $analyze" | bc -l)")
    fresh
    sql -c "COPY t FROM '$work/base.copy'" -c "VACUUM ANALYZE t"
    masks+=("$(mask)")
done
md5=$(printf '%s\n' "${md5s[@]}" | best); mask=$(printf '%s\n' "${masks[@]}" | best)
load=$(printf '%s\n' "${loads[@]}" | best)
ratio=$(echo "$mask / $md5" | bc -l); added=$(echo "$mask / $load" | bc -l)
rate=$(echo "$rows / $mask" | bc -l)

out="$root/loadtest/results/masking.md"
{
    echo "# Masking throughput ($rows rows, best of $rounds, \`bash loadtest/masking.sh\`)"
    echo
    echo "| what | seconds | |"
    echo "| --- | ---: | --- |"
    printf '| `UPDATE t SET email = md5(email), name = md5(name)`, `VACUUM FULL t`, `ANALYZE t` (baseline) | %.2f | |\n' "$md5"
    printf '| DevDB masking of the same columns (email, name: keyed, computed outside the server), `VACUUM FULL`, `ANALYZE` | %.2f | %.2f× the baseline, %.0f rows/s |\n' "$mask" "$ratio" "$rate"
    printf '| loading the same rows with COPY (what a restore does) | %.2f | the masking step adds %.2f× that |\n' "$load" "$added"
    echo
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), fsync off as in DevDB's restore server; $(nproc) cores."
} >"$out"
cat "$out"
