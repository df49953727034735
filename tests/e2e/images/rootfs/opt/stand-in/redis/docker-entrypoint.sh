#!/bin/sh
# Stand-in for the official redis image's entrypoint: bare options (or a
# .conf file) go to redis-server; as root, own the working dir (/data) and
# re-run as redis; without a config that sets it, turn protected mode off so
# other containers may connect, as the official image does.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$0" "$@"
fi

if [ "$1" = redis-server ]; then
    shift
    if [ -f "${1:-}" ]; then
        config="$1"; shift
        if grep -q '^protected-mode' "$config"; then
            set -- "$config" "$@"
        else
            set -- "$config" --protected-mode no "$@"
        fi
    else
        set -- --protected-mode no "$@"
    fi
    set -- redis-server "$@"
fi

[ "$(umask)" != 0022 ] || umask 0077  # data files private unless told otherwise
exec "$@"
