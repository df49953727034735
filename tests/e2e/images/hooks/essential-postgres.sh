#!/bin/sh
# mmdebstrap essential hook of the trixie rootfs, with the rootfs as $1: the
# postgres user (999, as in the official image) before postgresql-common would
# pick a free ID. Trixie's Essential set has no groupadd/useradd (passwd is no
# longer Essential), so the entries are written directly.
set -eu
root="$1"
grep -q '^postgres:' "$root/etc/group" || echo 'postgres:x:999:' >>"$root/etc/group"
grep -q '^postgres:' "$root/etc/passwd" \
    || echo 'postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash' \
    >>"$root/etc/passwd"

# The image entrypoint runs initdb itself; no Debian "main" cluster wanted.
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.d/no-main-cluster.conf"
