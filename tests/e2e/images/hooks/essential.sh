#!/bin/sh
# mmdebstrap essential hook: runs after the Essential:yes packages, before the
# --include packages, with the rootfs as $1.
set -eu
root="$1"

# Fixed IDs for the service users, created before the package scripts would
# pick free ones: nginx is 101:101 as in the official image, postgres 999 as
# in the official postgres image. Official redis is also 999; in this shared
# rootfs it gets 998. Package postinsts find the users and leave them alone.
add_user() {  # name id home shell
    chroot "$root" getent passwd "$1" >/dev/null && return
    chroot "$root" groupadd --system --gid "$2" "$1"
    chroot "$root" useradd --system --uid "$2" --gid "$2" --home-dir "$3" --no-create-home \
        --shell "$4" "$1"
}
add_user nginx 101 /nonexistent /bin/false
add_user postgres 999 /var/lib/postgresql /bin/bash
add_user redis 998 /var/lib/redis /usr/sbin/nologin

# The image entrypoint runs initdb itself; no Debian "main" cluster wanted.
dropins="$root/etc/postgresql-common/createcluster.d"
mkdir -p "$dropins"
echo 'create_main_cluster = false' >"$dropins/no-main-cluster.conf"
