#!/usr/bin/env bash
# Stand-in for the official postgres image's entrypoint (the parts we rely on):
# as root, own $PGDATA and re-run as postgres; on an empty $PGDATA run initdb
# once with POSTGRES_* settings, using a socket-only temporary server that gets
# the same extra arguments as the real one; then exec the command.
set -Eeuo pipefail

# POSTGRES_X_FILE may replace POSTGRES_X (Docker secrets style).
for var in POSTGRES_PASSWORD POSTGRES_USER POSTGRES_DB POSTGRES_INITDB_ARGS; do
    file_var="${var}_FILE"
    if [ -n "${!file_var:-}" ]; then
        [ -z "${!var:-}" ] || { echo >&2 "error: both $var and $file_var are set"; exit 1; }
        export "$var"="$(<"${!file_var}")"
        unset "$file_var"
    fi
done

[ "${1:0:1}" != '-' ] || set -- postgres "$@"  # bare flags go to postgres

if [ "$1" = postgres ]; then
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA" || :
    mkdir -p /var/run/postgresql && chmod 3777 /var/run/postgresql || :
    if [ "$(id -u)" = 0 ]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
        exec gosu postgres "$BASH_SOURCE" "$@"
    fi

    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
        : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
        if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
            echo >&2 "error: database is uninitialized and POSTGRES_PASSWORD is not set"
            echo >&2 "       (set it, or POSTGRES_HOST_AUTH_METHOD=trust)"
            exit 1
        fi
        # Word splitting of POSTGRES_INITDB_ARGS is intended, as upstream.
        # shellcheck disable=SC2086
        initdb --username="$POSTGRES_USER" \
            --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") ${POSTGRES_INITDB_ARGS:-}
        # Local (socket) connections stay trusted; anything over TCP needs
        # the password unless the operator chose otherwise.
        printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

        shift  # the temp server gets the real server's extra args, TCP off
        PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w start \
            -o "$(printf '%q ' "$@" -c listen_addresses= -p "${PGPORT:-5432}")"
        psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
        if [ "$POSTGRES_DB" != postgres ]; then
            "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sh) echo "running $f"; bash "$f" ;;
                *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            esac
        done
        PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
        set -- postgres "$@"
        echo 'PostgreSQL init process complete; ready for start up.'
    else
        echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
    fi
fi

exec "$@"
