#!/bin/sh
# Stand-in for the official nginx image's entrypoint: for nginx commands, run
# the executable hooks in /docker-entrypoint.d (none are shipped), then exec.
set -e

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
    for hook in /docker-entrypoint.d/*.sh; do
        [ -x "$hook" ] || continue
        echo "$0: running $hook"
        "$hook"
    done
fi

exec "$@"
