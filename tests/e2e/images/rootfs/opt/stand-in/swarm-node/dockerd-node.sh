#!/bin/sh
# A swarm node's engine, in a container of the e2e swarm bed (tests/e2e/swarm/).
# Its API is on TCP for the test host (the bed's network only, no TLS: a test
# network on one machine), and REGISTRY_MIRROR, the bed's registry, stands in for
# Docker Hub: images named as the program names them (matrixdotorg/synapse:...)
# are pulled from there. NODE_CGROUP_PARENT keeps the node's containers under one
# cgroup of the host's, where the bed's memory is measured.
set -eu
# A container restarted with its volume keeps a stale pid file; dockerd refuses it.
rm -f /var/run/docker.pid
mirror=${REGISTRY_MIRROR:-}
exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 --tls=false \
    ${mirror:+--registry-mirror "$mirror" --insecure-registry "${mirror#http://}"} \
    ${NODE_CGROUP_PARENT:+--cgroup-parent "$NODE_CGROUP_PARENT"} "$@"
