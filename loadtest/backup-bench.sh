#!/usr/bin/env bash
# What backups cost, measured on this machine in one run against one PostgreSQL 15 instance
# configured as DevDB's local runtime configures its databases (max_wal_size 64MB,
# min_wal_size 32MB, everything else PostgreSQL's defaults, fsync on), with a pgbench database
# (scale SCALE, 50: about 750 MB) and a stanza configured by devdb-backup itself
# (backup/examples/bench_stanza.rs: asynchronous archive-push, zstd, aes-256-cbc, a directory
# repository on the same disk):
#   (a) archiving's cost to throughput: read-write pgbench (TPC-B-like) with archive_mode off
#       (the baseline) and with archiving on, alternating between them (restarting the server
#       at each switch), ROUNDS (5) rounds of SECONDS_PER_RUN (15) s at each of CLIENTS
#       (1 4 16); the ratio is the median over rounds of on ÷ off within a round (each pair
#       runs back to back, so drift in the machine's load cancels more than in a ratio of
#       averages); for the archiving runs, whether archiving kept up (segments waiting at the
#       end);
#   (b) a full backup's and a restore's throughput (MB of data directory per second) beside
#       `cp -a` of the same data directory followed by `sync` (the baseline), alternating,
#       ROUNDS rounds, page cache warm; medians.
# Each run records the 1-minute load average at its end: figures from a machine others are
# using say so. Writes loadtest/results/backup-bench.md (ratios to the baselines) and
# backup-bench.jsonl (every run).
#
#   bash loadtest/backup-bench.sh             # about 15 minutes on 2 cores
#   QUICK=1 bash loadtest/backup-bench.sh     # a 2-minute smoke run (scale 5, 5 s runs, 1 round)
#   SCALE=100 ROUNDS=3 SECONDS_PER_RUN=30 CLIENTS="1 8" bash loadtest/backup-bench.sh
#
# Needs: PostgreSQL 15 server binaries, pgbench, pgbackrest, python3 (apt-get install
# postgresql-15 postgresql-contrib pgbackrest python3). Runs as root (the server and pgBackRest
# as the postgres user).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/loadtest/results"
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
port=55442
if [ -n "${QUICK:-}" ]; then
    scale=5; seconds=5; rounds=1; clients_list="1 4"
else
    scale=50; seconds=15; rounds=5; clients_list="1 4 16"
fi
scale=${SCALE:-$scale}; seconds=${SECONDS_PER_RUN:-$seconds}; rounds=${ROUNDS:-$rounds}
clients_list=${CLIENTS:-$clients_list}
work=$(mktemp -d /tmp/devdb-backup-bench.XXXXXX)
chmod 755 "$work" && chown postgres "$work"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
    as_pg "$bin/pg_ctl" stop -D "$work/data" -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
raw="$work/runs.jsonl"
record() { echo "${1%\}},\"load\":$(cut -d' ' -f1 /proc/loadavg)}" >> "$raw"; }

echo "building the stanza configurator…"
(cd "$root" && cargo build --release -q -p devdb-backup --example bench_stanza)

echo "PostgreSQL and a pgbench database (scale $scale) in $work…"
as_pg "$bin/initdb" -D "$work/data" -U postgres >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
max_wal_size = '64MB'
min_wal_size = '32MB'
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
include_if_exists = 'archiving.conf'
CONF
archive_command=$(as_pg "$root/target/release/examples/bench_stanza" "$work/repo" "$work/data" "$port" "$work" postgres "$work/stanza" bench)
backrest() { as_pg pgbackrest "--config=$work/stanza/pgbackrest.conf" --stanza=bench "$@"; }
sql() { as_pg "$bin/psql" -X -q -At -h "$work" -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -c "$1"; }
# archive_mode needs a restart.
archiving() { # on|off
    if [ "$1" = on ]; then
        printf "archive_mode = on\narchive_command = '%s'\narchive_timeout = 60\n" "${archive_command//\'/\'\'}" > "$work/data/archiving.conf"
    else
        echo "archive_mode = off" > "$work/data/archiving.conf"
    fi
    chown postgres:postgres "$work/data/archiving.conf"
    as_pg "$bin/pg_ctl" restart -D "$work/data" -l "$work/pg.log" -m fast -w >/dev/null
}
as_pg "$bin/pg_ctl" start -D "$work/data" -l "$work/pg.log" -w >/dev/null
as_pg "$bin/psql" -X -q -h "$work" -p "$port" -U postgres -d postgres -c "CREATE DATABASE bench"
as_pg "$bin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres bench 2>/dev/null
sql "VACUUM ANALYZE"
archiving on
backrest stanza-create

echo "(a) read-write pgbench, archiving off and on, $rounds rounds of ${seconds} s…"
ready() { find "$work/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
for round in $(seq 1 "$rounds"); do
    for clients in $clients_list; do
        # Alternate which goes first, so neither always runs on a fresher table.
        order="off on"; [ $((round % 2)) = 0 ] && order="on off"
        for mode in $order; do
            archiving "$mode"
            sql "CHECKPOINT" >/dev/null
            before=$(sql "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver")
            tps=$(as_pg "$bin/pgbench" -n -c "$clients" -j "$(( clients < 2 ? clients : 2 ))" -T "$seconds" \
                -h "$work" -p "$port" -U postgres bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
            after=$(sql "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver")
            read -r a0 f0 <<< "$before"; read -r a1 f1 <<< "$after"
            echo "  round $round, $clients clients, archiving $mode: $tps tps"
            record "{\"section\":\"pgbench\",\"round\":$round,\"clients\":$clients,\"archiving\":\"$mode\",\"tps\":$tps,\"archived\":$((a1 - a0)),\"failed\":$((f1 - f0)),\"waiting_at_end\":$(ready)}"
        done
    done
done

echo "(b) full backup and restore beside cp -a, $rounds rounds…"
archiving on
sql "CHECKPOINT" >/dev/null
elapsed() { local start=$1; python3 -c "import time; print(f'{time.monotonic() - $start:.3f}')"; }
now() { python3 -c 'import time; print(time.monotonic())'; }
for round in $(seq 1 "$rounds"); do
    bytes=$(du -sb "$work/data" | cut -f1)
    start=$(now); cp -a "$work/data" "$work/copy"; sync; secs=$(elapsed "$start")
    rm -rf "$work/copy"; sync
    record "{\"section\":\"copy\",\"round\":$round,\"bytes\":$bytes,\"seconds\":$secs}"
    echo "  round $round: cp -a $bytes bytes in $secs s"

    start=$(now); backrest backup --type=full; secs=$(elapsed "$start")
    info=$(backrest info --output=json)
    size=$(python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"][-1]["info"]; print(b["size"], b["repository"]["size"])' <<< "$info")
    read -r bytes repo_bytes <<< "$size"
    record "{\"section\":\"backup\",\"round\":$round,\"bytes\":$bytes,\"repository_bytes\":$repo_bytes,\"seconds\":$secs}"
    echo "  round $round: full backup of $bytes bytes ($repo_bytes in the repository) in $secs s"

    install -d -o postgres -m 700 "$work/restored"
    start=$(now); backrest restore "--pg1-path=$work/restored" --archive-mode=off; sync; secs=$(elapsed "$start")
    rm -rf "$work/restored"; sync
    record "{\"section\":\"restore\",\"round\":$round,\"bytes\":$bytes,\"seconds\":$secs}"
    echo "  round $round: restore in $secs s"
done

machine="$(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r), $(df -T "$work" | awk 'NR==2 {print $2}') at $work"
versions="PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), $(pgbackrest version)"
mkdir -p "$out"
cp "$raw" "$out/backup-bench.jsonl"
python3 - "$raw" "$out/backup-bench.md" "$machine" "$versions" "$scale" "$seconds" "$rounds" <<'PY'
import json, statistics, sys
raw, md, machine, versions, scale, seconds, rounds = sys.argv[1:]
runs = [json.loads(l) for l in open(raw)]
median = statistics.median
def listed(values, fmt="{:,.0f}"):
    return ", ".join(fmt.format(v) for v in values)
lines = [f"# Backups' cost (`bash loadtest/backup-bench.sh`: pgbench scale {scale}, {rounds} rounds)", ""]
lines += [f"## Archiving and throughput (read-write pgbench, {seconds} s runs, alternating)", "",
          "| clients | tps, archiving off (baseline): median (each round) | tps, archiving on | on ÷ off, median of rounds (range) | segments archived per run | most waiting at a run's end | failed |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for clients in sorted({r["clients"] for r in runs if r["section"] == "pgbench"}):
    of = [r for r in runs if r["section"] == "pgbench" and r["clients"] == clients]
    off = {r["round"]: r["tps"] for r in of if r["archiving"] == "off"}
    on = {r["round"]: r for r in of if r["archiving"] == "on"}
    ratios = [on[k]["tps"] / off[k] for k in sorted(off)]
    on_tps = [on[k]["tps"] for k in sorted(on)]
    lines.append(f"| {clients} | {median(off.values()):,.0f} ({listed(off[k] for k in sorted(off))}) | "
                 f"{median(on_tps):,.0f} ({listed(on_tps)}) | {median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
                 f"{median(r['archived'] for r in on.values()):.0f} | {max(r['waiting_at_end'] for r in on.values())} | "
                 f"{sum(r['failed'] for r in on.values())} |")
lines += ["", "## Full backup and restore beside `cp -a` (MB = 10^6 bytes of data directory)", "",
          "| what | MB | seconds: median (each round) | MB/s | ÷ `cp -a` |", "| --- | ---: | ---: | ---: | ---: |"]
def rate(section):
    rs = [r for r in runs if r["section"] == section]
    return rs, rs[-1]["bytes"] / median(r["seconds"] for r in rs) / 1e6
copies, copy_rate = rate("copy")
for section, label in [("copy", "`cp -a` of the data directory, then `sync` (baseline)"),
                       ("backup", "pgBackRest full backup (zstd, aes-256-cbc, 2 processes)"),
                       ("restore", "pgBackRest restore of it, then `sync`")]:
    rs, r = rate(section)
    extra = f"; {rs[-1]['repository_bytes'] / 1e6:.0f} MB in the repository" if section == "backup" else ""
    lines.append(f"| {label}{extra} | {rs[-1]['bytes'] / 1e6:.0f} | {median(x['seconds'] for x in rs):.2f} "
                 f"({listed((x['seconds'] for x in rs), '{:.2f}')}) | {r:.0f} | {r / copy_rate:.2f} |")
loads = [r["load"] for r in runs]
lines += ["", f"Machine: {machine}; {versions}. 1-minute load average at the runs' ends: "
          f"{min(loads):.2f}–{max(loads):.2f} (median {median(loads):.2f}) on {len(loads)} runs."]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
