#!/usr/bin/env bash
# Prepare a Debian bookworm host (run as root) for the end-to-end tests:
# packages, a running Docker engine, and a firewall rule that keeps every
# container on this machine. Idempotent: safe to run again at any time.
#
#   host_setup.sh                    set up (packages, engine, egress rule)
#   host_setup.sh --restart-engine   stop the engine cleanly and start it again
#                                    (the e2e engine-restart fault), then check
#                                    that the egress rule survived, without re-adding it
set -euo pipefail

log() { echo "host_setup: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
restart_engine=false
case "${1:-}" in
    "") ;;
    --restart-engine) restart_engine=true ;;
    *) log "unknown argument: $1"; exit 2 ;;
esac

# docker.io: the engine (20.10 in bookworm); mmdebstrap: builds the stand-in
# images, since no registry is reachable; iptables: the egress rule below;
# nginx: host-side config checks (nginx -t); busybox, lego and pebble: the ACME
# client's script run as the official lego image would (busybox sh), against
# Let's Encrypt's test server, on this host (tests/nginx/test_acme.py).
PACKAGES=(docker.io mmdebstrap iptables iproute2 nginx ca-certificates busybox lego pebble)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && ! $restart_engine; then
    log "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Stop the engine the way its service would: SIGTERM, upon which dockerd stops
# every container (each with its stop signal and timeout) and its containerd,
# removes its pid file and exits. Containers whose restart policy says so are
# started again by the next dockerd.
stop_engine() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -z "$pid" ] || ! running "$pid"; then
        log "no dockerd running"
        return
    fi
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 120); do
        running "$pid" || { log "dockerd stopped"; return; }
        sleep 1
    done
    log "dockerd (pid $pid) did not stop within 120 s; see /tmp/dockerd.log"
    exit 1
}
running() {  # a live process (an unreaped zombie does not count)
    [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]
}

if $restart_engine; then
    if [ -d /run/systemd/system ]; then
        log "restarting docker.service"
        systemctl stop docker
    else
        stop_engine
    fi
fi

# Start the engine unless one already answers. Without systemd (CI sandboxes)
# dockerd runs in the background; overlay2 on ext4 and the default iptables
# (nft) backend work as they are, so no special flags are needed.
if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl start docker
    else
        log "starting dockerd (log: /tmp/dockerd.log)"
        rm -f /var/run/docker.pid  # stale after a crash; dockerd refuses to start
        # Own session: the engine must outlive the shell (and process group) that started it.
        setsid nohup dockerd >>/tmp/dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /tmp/dockerd.log"; exit 1; }
fi
log "docker $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}')"

# No container may reach beyond this machine: drop everything Docker would
# forward to the uplink. DOCKER-USER is evaluated before Docker's own rules
# and survives dockerd restarts. Host-local traffic is unaffected.
default_dev() {  # interface of the default route for -4 or -6
    ip "$1" route show default | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n1
}
uplink=$(default_dev -4)
if [ -z "$uplink" ]; then
    log "no IPv4 default route: nothing to block"
else
    # After an engine restart the rule must still be there: only check it.
    $restart_engine || iptables -C DOCKER-USER -o "$uplink" -j DROP 2>/dev/null \
        || iptables -I DOCKER-USER -o "$uplink" -j DROP
    # Verify by reading the rules back rather than by sending traffic out.
    iptables -S DOCKER-USER | grep -qx -- "-A DOCKER-USER -o $uplink -j DROP" \
        && iptables -S FORWARD | grep -qx -- '-A FORWARD -j DOCKER-USER' \
        || { log "egress DROP rule not in force (iptables -S DOCKER-USER, FORWARD)"; exit 1; }
    log "egress to $uplink dropped for containers ($(iptables -V))"
fi
# Docker runs without IPv6 here, but a bridge given IPv6 later must not leak:
# this host routes nothing, so dropping all forwarded IPv6 to the uplink is safe.
uplink6=$(default_dev -6)
if [ -n "$uplink6" ] && ! $restart_engine && ip6tables -S FORWARD >/dev/null 2>&1; then
    ip6tables -C FORWARD -o "$uplink6" -j DROP 2>/dev/null \
        || ip6tables -I FORWARD -o "$uplink6" -j DROP
fi
