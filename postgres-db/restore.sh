#!/usr/bin/env bash
# DevDB restore entrypoint: restores a project's dump into an empty data directory (the project's
# golden volume), then checkpoints and stops PostgreSQL cleanly so the volume can be snapshotted
# and cloned. Runs as the postgres user (the image's default), in a Kubernetes Job.
#
# Environment:
#   BACKUP_URL    http(s)://…, s3://bucket/key (aws CLI, credentials from the environment),
#                 file:///path; empty: an empty database
#   PGDATA        data directory to create (must be empty or absent)
#   DB_USER       the project's user (owner of its database, not a superuser)
#   DB_NAME       the project's database
#   DB_PASSWORD   the user's password (SCRAM)
#   PG_BIN        PostgreSQL binaries (default: from PATH)
#   JOBS          pg_restore parallelism (default: nproc)
# Exit status 0 on success; on failure the reason is printed to stderr and written to
# /dev/termination-log when that exists (Kubernetes shows it in the pod status).
set -euo pipefail

fail() {
    echo "restore failed: $*" >&2
    [ -w /dev/termination-log ] && echo "$*" > /dev/termination-log
    exit 1
}

: "${PGDATA:?PGDATA is required}" "${DB_USER:?DB_USER is required}" "${DB_NAME:?DB_NAME is required}"
: "${DB_PASSWORD:?DB_PASSWORD is required}"
BACKUP_URL="${BACKUP_URL:-}"
JOBS="${JOBS:-$(nproc)}"
if [ -n "${PG_BIN:-}" ]; then PATH="$PG_BIN:$PATH"; fi
[[ "$DB_USER" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || fail "DB_USER must be a lower-case identifier"
[[ "$DB_NAME" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || fail "DB_NAME must be a lower-case identifier"
if [ -e "$PGDATA/PG_VERSION" ]; then fail "$PGDATA already holds a database"; fi

work=$(mktemp -d)
socket="$work/socket"
mkdir -p "$socket"
cleanup() {
    pg_ctl stop -D "$PGDATA" -m immediate >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# 1. Fetch, streaming to disk.
dump=""
case "$BACKUP_URL" in
    "") ;;
    http://*|https://*)
        dump="$work/download"
        curl -fsSL --retry 3 --retry-connrefused -o "$dump" "$BACKUP_URL" 2> "$work/curl.err" \
            || fail "cannot download $BACKUP_URL: $(tail -n1 "$work/curl.err")" ;;
    s3://*)
        dump="$work/download"
        aws s3 cp --only-show-errors "$BACKUP_URL" "$dump" 2> "$work/aws.err" \
            || fail "cannot download $BACKUP_URL: $(tail -n1 "$work/aws.err")" ;;
    file://*)
        dump="${BACKUP_URL#file://}"
        [ -r "$dump" ] || fail "cannot read $dump" ;;
    *) fail "unsupported backup location $BACKUP_URL (use http(s)://, s3:// or file://)" ;;
esac

# 2. Recognise the dump from its content.
format=""
magic() { head -c "$2" "$1" | tail -c "$(( $2 - $3 ))"; }
if [ -n "$dump" ]; then
    if [ -d "$dump" ]; then
        [ -f "$dump/toc.dat" ] || fail "directory $dump is not a pg_dump directory (no toc.dat)"
        format=directory
    else
        if [ "$(head -c2 "$dump" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
            gunzip -c "$dump" > "$work/unzipped" 2> "$work/gz.err" || fail "the gzip stream is damaged or truncated"
            dump="$work/unzipped"
        fi
        if [ "$(head -c5 "$dump")" = "PGDMP" ]; then
            format=custom
        elif [ "$(magic "$dump" 262 257)" = "ustar" ]; then
            members=$(tar -tf "$dump" 2>/dev/null) || fail "the tar archive is damaged"
            if grep -qx 'restore.sql' <<< "$members" && grep -qx 'toc.dat' <<< "$members"; then
                format=tar
            else
                toc=$(grep -m1 -E '^([^/]+/)?toc\.dat$' <<< "$members") || fail "a tar archive without toc.dat is not a pg_dump"
                mkdir "$work/dir" && tar -xf "$dump" -C "$work/dir" || fail "cannot unpack the directory dump"
                dump="$work/dir/$(dirname "$toc")"
                format=directory
            fi
        elif head -c 512 "$dump" | grep -aqE 'PostgreSQL database dump|^(--|SET |CREATE |BEGIN)'; then
            format=plain
            if head -c 512 "$dump" | grep -aq 'PostgreSQL database dump' \
                && ! tail -c 512 "$dump" | grep -aq -- '-- PostgreSQL database dump complete'; then
                fail "the SQL dump is truncated (no 'PostgreSQL database dump complete' line at its end)"
            fi
        else
            fail "$BACKUP_URL is not a PostgreSQL dump (plain, custom, tar or directory, optionally gzipped)"
        fi
    fi
fi

# 3. A fresh server, reachable only on a private socket, tuned for loading.
initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null \
    || fail "initdb failed"
cat > "$PGDATA/postgresql.auto.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$socket'
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = '1GB'
min_wal_size = '32MB'
unix_socket_permissions = 0700
CONF
pg_ctl start -D "$PGDATA" -l "$work/server.log" -w -t 120 >/dev/null || fail "PostgreSQL did not start: $(tail -n3 "$work/server.log")"
sql() { psql -X -q -v ON_ERROR_STOP=1 -h "$socket" -U postgres "$@"; }
sql -d postgres -c "CREATE ROLE \"$DB_USER\" LOGIN CREATEDB PASSWORD '${DB_PASSWORD//\'/\'\'}'" \
    -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\"" || fail "cannot create the user and database"

# 4. Restore as the project's user, without the source's owners and grants; stop at the first error.
target=(-h "$socket" -U "$DB_USER" -d "$DB_NAME")
case "$format" in
    "") ;;
    plain) psql -X -q -v ON_ERROR_STOP=1 "${target[@]}" -f "$dump" 2> "$work/restore.err" \
               || fail "restoring the dump failed: $(tail -n3 "$work/restore.err" | tr '\n' ' ')" ;;
    tar) pg_restore --no-owner --no-acl --exit-on-error "${target[@]}" "$dump" 2> "$work/restore.err" \
             || fail "restoring the dump failed: $(tail -n3 "$work/restore.err" | tr '\n' ' ')" ;;
    *) pg_restore --no-owner --no-acl --exit-on-error -j "$JOBS" "${target[@]}" "$dump" 2> "$work/restore.err" \
           || fail "restoring the dump failed: $(tail -n3 "$work/restore.err" | tr '\n' ' ')" ;;
esac

# 5. Statistics, a small pg_wal, a clean stop: the volume is a consistent template.
sql -d "$DB_NAME" -c "ANALYZE" -c "ALTER SYSTEM SET max_wal_size = '64MB'" -c "SELECT pg_reload_conf()" \
    || fail "ANALYZE failed"
sql -d postgres -c "CHECKPOINT" -c "CHECKPOINT" || fail "CHECKPOINT failed"
pg_ctl stop -D "$PGDATA" -m fast -w >/dev/null || fail "PostgreSQL did not stop cleanly"
printf "max_wal_size = '64MB'\nmin_wal_size = '32MB'\n" > "$PGDATA/postgresql.auto.conf"
sync
echo "restored ${format:-nothing (empty database)} into $PGDATA ($(du -sh "$PGDATA" | cut -f1))"
