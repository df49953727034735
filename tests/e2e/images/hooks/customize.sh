#!/bin/sh
# mmdebstrap customize hook: runs after all packages are installed, with the
# rootfs as $1. Needs E2E_UV (a uv binary), E2E_SYNAPSE_REQUIREMENT,
# E2E_SYNAPSE_PEER_REQUIREMENT, E2E_SYNAPSE_PEER_EXCLUDE_NEWER and
# E2E_ROOTFS_FILES (our files, overlaid onto the rootfs) from build.py.
set -eu
root="$1"

# Synapse into a venv that also sees Debian's python3-psycopg2. uv runs inside
# the chroot with a clean environment: the host's CA variables name paths the
# chroot lacks, so hand it a copy of the host's bundle instead. Bytecode is
# compiled now because Synapse runs as a user who cannot write the venv.
cp "$E2E_UV" "$root/tmp/uv"
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/ca.crt"
in_root() {
    chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root SSL_CERT_FILE=/tmp/ca.crt \
        UV_NO_CACHE=1 ${https_proxy:+https_proxy=$https_proxy} \
        ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} "$@"
}
in_root /tmp/uv venv --quiet --system-site-packages --python /usr/bin/python3 /opt/synapse
in_root /tmp/uv pip install --quiet --python /opt/synapse/bin/python --compile-bytecode \
    "$E2E_SYNAPSE_REQUIREMENT"
# The older release (federation peers, the upgrade test), in a venv of its own;
# psycopg2 from Debian like the main venv's, since the upgrade test runs it on Postgres.
in_root /tmp/uv venv --quiet --system-site-packages --python /usr/bin/python3 /opt/synapse-peer
in_root /tmp/uv pip install --quiet --python /opt/synapse-peer/bin/python --compile-bytecode \
    --exclude-newer "$E2E_SYNAPSE_PEER_EXCLUDE_NEWER" "$E2E_SYNAPSE_PEER_REQUIREMENT"
rm "$root/tmp/uv" "$root/tmp/ca.crt"

# Our entrypoints and configs, owned by root whatever the checkout's umask.
tar -C "$E2E_ROOTFS_FILES" --owner=0 --group=0 --mode=go-w -cf - . \
    | tar -C "$root" --no-overwrite-dir -xf -
chmod 755 "$root/start.py" "$root/docker-entrypoint.sh" "$root"/opt/stand-in/*/docker-entrypoint.sh

# postgres: same layout and defaults as the official image (TCP on all
# addresses unless told otherwise; sockets in /var/run/postgresql).
sed -ri "s/^#?(listen_addresses)\s*=\s*\S+.*/\1 = '*'/" \
    "$root/usr/share/postgresql/15/postgresql.conf.sample"
# /var/run is an absolute link to /run: from the host, never go through it.
install -d -o 999 -g 999 -m 3777 "$root/run/postgresql"
install -d -o 999 -g 999 -m 1777 "$root/var/lib/postgresql/data"
install -d "$root/docker-entrypoint-initdb.d"

# nginx: logs to the container's stdout/stderr; drop Debian's default site.
rm -f "$root/etc/nginx/sites-enabled/default"
ln -sf /dev/stdout "$root/var/log/nginx/access.log"
ln -sf /dev/stderr "$root/var/log/nginx/error.log"
install -d "$root/docker-entrypoint.d"

# prometheus: as prom/prometheus, its data directory and config belong to nobody
# (65534); Debian's package service user is not used.
install -d -o 65534 -g 65534 -m 0755 "$root/prometheus"
chown 65534:65534 "$root/etc/prometheus" "$root/etc/prometheus/prometheus.yml"

# No /data in the rootfs: the official Synapse image has none, so an empty
# volume mounted there keeps its own owner (Docker copies an image dir's
# owner onto a new volume). The redis image's WORKDIR creates its /data.

# Build leftovers that only cost space; mmdebstrap's own /run cleanup is
# skipped (it would delete /run/postgresql), so clear the rest here.
find "$root/run" -mindepth 1 -maxdepth 1 ! -name lock ! -name postgresql -exec rm -rf {} +
rm -rf "$root"/var/log/apt/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
