#!/bin/sh
# mmdebstrap customize hook of the trixie rootfs (postgres:17-trixie only), with
# the rootfs as $1: the Postgres parts of customize.sh. Needs E2E_ROOTFS_FILES.
set -eu
root="$1"

mkdir -p "$root/opt/stand-in"
tar -C "$E2E_ROOTFS_FILES/opt/stand-in" --owner=0 --group=0 --mode=go-w -cf - postgres \
    | tar -C "$root/opt/stand-in" -xf -
chmod 755 "$root/opt/stand-in/postgres/docker-entrypoint.sh"

# Same layout and defaults as the official image (customize.sh says why).
sed -ri "s/^#?(listen_addresses)\s*=\s*\S+.*/\1 = '*'/" \
    "$root/usr/share/postgresql/17/postgresql.conf.sample"
install -d -o 999 -g 999 -m 3777 "$root/run/postgresql"
install -d -o 999 -g 999 -m 1777 "$root/var/lib/postgresql/data"
install -d "$root/docker-entrypoint-initdb.d"

find "$root/run" -mindepth 1 -maxdepth 1 ! -name lock ! -name postgresql -exec rm -rf {} +
rm -rf "$root"/var/log/apt/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
