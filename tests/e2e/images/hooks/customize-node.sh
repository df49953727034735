#!/bin/sh
# mmdebstrap customize hook of the swarm bed's trixie rootfs (the node engine and
# the registry), with the rootfs as $1. Needs E2E_ROOTFS_FILES.
set -eu
root="$1"
mkdir -p "$root/opt/stand-in"
tar -C "$E2E_ROOTFS_FILES/opt/stand-in" --owner=0 --group=0 --mode=go-w -cf - swarm-node \
    | tar -C "$root/opt/stand-in" -xf -
chmod 755 "$root/opt/stand-in/swarm-node/dockerd-node.sh"
# Debian turns on htpasswd auth; the official image has none.
install -m 644 "$root/opt/stand-in/swarm-node/registry-config.yml" "$root/etc/docker/registry/config.yml"
find "$root/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +
rm -rf "$root"/var/log/apt/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
