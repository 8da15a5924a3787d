#!/usr/bin/env bash
# DevDB database entrypoint: runs PostgreSQL on a database's volume (a clone of its project's
# snapshot) after giving the project's user this database's own password, so every clone has
# its own credentials although they all come from one snapshot.
#
# Environment:
#   PGDATA        the cloned data directory
#   DB_USER       the project's user
#   DB_PASSWORD   this database's password (SCRAM)
#   PORT          TCP port (default 5432)
#   PG_BIN        PostgreSQL binaries (default: from PATH)
# Extra arguments go to postgres (e.g. -c shared_buffers=256MB).
# From the network only the project's user may log in, with its password, and only the proxy
# gets to try: the NetworkPolicy in front of the pod admits nothing else (the controller checks
# that the cluster enforces it).
set -euo pipefail

fail() {
    echo "start failed: $*" >&2
    [ -w /dev/termination-log ] && echo "$*" > /dev/termination-log
    exit 1
}

: "${PGDATA:?PGDATA is required}" "${DB_USER:?DB_USER is required}" "${DB_PASSWORD:?DB_PASSWORD is required}"
if [ -n "${PG_BIN:-}" ]; then PATH="$PG_BIN:$PATH"; fi
[[ "$DB_USER" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || fail "DB_USER must be a lower-case identifier"
[ -f "$PGDATA/PG_VERSION" ] || fail "$PGDATA holds no database (the clone of the project's snapshot is missing)"
# kubelet applies the pod's fsGroup to the volume (group rwx and setgid on directories, as the EBS
# CSI driver asks) and PostgreSQL refuses a data directory its group may write: private again.
chmod 0700 "$PGDATA" || fail "cannot make $PGDATA private (0700); PostgreSQL refuses a data directory others may write"

# The clone's data comes from a restore of a dump, and the restore could have been taken over:
# trust nothing in it but the data. A template holds regular files and directories only, no
# tablespace, nothing that makes a server recover or replay (a restore_command would run here).
odd=$(find "$PGDATA" ! -type f ! -type d -print -quit)
[ -z "$odd" ] || fail "the clone holds ${odd#"$PGDATA"/}, a link or a special file: its snapshot is not what a restore made"
[ -z "$(ls -A "$PGDATA/pg_tblspc")" ] || fail "the clone has a tablespace: its snapshot is not what a restore made"
for file in recovery.signal standby.signal backup_label tablespace_map; do
    [ ! -e "$PGDATA/$file" ] || fail "the clone holds $file: its snapshot is not what a restore made"
done
# Who may log in, written whole: the superuser over the private socket only, and from the network
# the project's user with its password (any other role, the superuser included, is refused).
marker="# devdb: clients come through the proxy"
{
    echo "local all postgres trust"
    echo "$marker"
    for net in 0.0.0.0/0 ::/0; do echo "host all \"$DB_USER\" $net scram-sha-256"; done
    for net in 0.0.0.0/0 ::/0; do echo "host all all $net reject"; done
} > "$PGDATA/pg_hba.conf"
: > "$PGDATA/pg_ident.conf"
# Settings a tampered configuration could use to run a program or load a library, and where the
# authentication files are: the command line wins over every configuration file.
safe=(-c "hba_file=$PGDATA/pg_hba.conf" -c "ident_file=$PGDATA/pg_ident.conf" -c restore_command= -c archive_command=
      -c archive_mode=off -c archive_cleanup_command= -c recovery_end_command= -c shared_preload_libraries=
      -c session_preload_libraries= -c local_preload_libraries= -c dynamic_library_path='$libdir')

# The password, set over a private socket before anything listens on the network, by a superuser
# session whose search_path no object of the dump can enter.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pg_ctl start -D "$PGDATA" -w -t 300 -l "$work/log" -o "-c listen_addresses='' -c unix_socket_directories='$work' ${safe[*]@Q}" >/dev/null \
    || fail "PostgreSQL did not start: $(tail -n3 "$work/log")"
PGOPTIONS='-c search_path=pg_catalog,pg_temp' \
    psql -X -q -v ON_ERROR_STOP=1 -h "$work" -U postgres -d postgres -v user="$DB_USER" -v password="$DB_PASSWORD" \
    2> "$work/psql.err" <<'SQL' || { pg_ctl stop -D "$PGDATA" -m fast -w >/dev/null; fail "cannot set the password: $(head -n1 "$work/psql.err")"; }
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid >= 16384 AND (r.rolsuper OR r.rolreplication OR r.rolbypassrls
             OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                        WHERE m.member = r.oid
                          AND g.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')))) THEN
    RAISE EXCEPTION 'the snapshot holds a privileged role: it is not what a restore made';
  END IF;
END $$;
ALTER ROLE :"user" PASSWORD :'password';
SQL
pg_ctl stop -D "$PGDATA" -m fast -w >/dev/null || fail "PostgreSQL did not stop after setting the password"
rm -rf "$work"
trap - EXIT

# The server runs the owner's code: the password is no part of its environment.
unset DB_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' -p "${PORT:-5432}" "${safe[@]}" "$@"
