#!/usr/bin/env python3
"""Build the stand-in images the end-to-end tests run on.

No image registry is reachable here, so the five images the program uses by
default are made locally under the same names. They share one Debian
bookworm rootfs made by mmdebstrap and imported once (one ~805 MB layer on
disk instead of five slimmer ones, and one bootstrap instead of five); each
image then gets its own entrypoint/cmd/volumes from a metadata-only
Dockerfile.<name>, because `docker import --change` cannot set STOPSIGNAL.
Postgres 17, the target of the major-version upgrade test, is not in bookworm:
its stand-in (postgres:17-trixie) gets a small rootfs of its own from Debian 13
(trixie), with the same Postgres entrypoint.

A hash over every file in this folder is stored as a label; when all
images carry the current hash, nothing is built. Usage: build.py [--force]
"""
import argparse
import fcntl
import hashlib
import io
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
HASH_LABEL = "synapse-e2e.build-hash"
ROOTFS_REPO = "synapse-e2e-rootfs"
# A second tag of the Synapse stand-in, with its own image ID: the e2e image change.
SYNAPSE_NEXT = "matrixdotorg/synapse:v1.163.2-next"
# An older Synapse release, for the federation peers the tests configure by hand
# (tests/e2e/fedbed.py): a mistake our renderer shares with itself cannot hide there.
PEER_SYNAPSE_VERSION = "1.140.0"
# Its dependencies as they were a few days after its release: today's
# prometheus_client breaks 1.140's metrics module (InFlightGauge's MRO).
PEER_EXCLUDE_NEWER = "2025-10-20"
SYNAPSE_PEER = f"matrixdotorg/synapse:v{PEER_SYNAPSE_VERSION}"
# Let's Encrypt's ACME test server and its DNS/challenge test server (Debian's
# pebble), for the ACME tests (tests/e2e/test_acme.py): a test image, no product's.
PEBBLE = "synapse-e2e/pebble:bookworm"
IMAGES = {  # tag the program expects -> Dockerfile with its metadata
    "matrixdotorg/synapse:v1.163.2": "Dockerfile.synapse",
    SYNAPSE_NEXT: "Dockerfile.synapse-next",
    SYNAPSE_PEER: "Dockerfile.synapse-peer",
    "postgres:15-bookworm": "Dockerfile.postgres",
    "redis:7.0-bookworm": "Dockerfile.redis",
    "nginx:1.22.1": "Dockerfile.nginx",
    "prom/prometheus:v2.42.0": "Dockerfile.prometheus",
    "goacme/lego:v4.9.1": "Dockerfile.lego",
    PEBBLE: "Dockerfile.pebble",
}
SYNAPSE_REQUIREMENT = "matrix-synapse[redis]==1.163.2"
UV_VERSION = "0.13.9"
SUITE = "bookworm"
MIRRORS = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
PACKAGES = [
    "ca-certificates", "curl", "gosu",            # every image
    "python3", "python3-psycopg2",                # synapse (venv on top)
    "postgresql-15",
    "redis-server",                               # also brings libjemalloc2
    "nginx",
    "prometheus", "wget",                         # wget: the official image's healthcheck tool
    "lego",                                       # goacme/lego's one binary
    "pebble",                                     # the ACME tests' server (PEBBLE)
]
# postgres:17-trixie, on a rootfs of its own (TRIXIE_PACKAGES only).
TRIXIE_IMAGES = {"postgres:17-trixie": "Dockerfile.postgres17"}
# The swarm bed (tests/e2e/swarm/): a Docker engine to run in a container as a
# swarm node, and the registry the nodes pull the stand-in images from. Trixie's
# docker.io is a current engine (26.x), so the program is proven on it as well as
# on the host's bookworm 20.10; Debian's docker-registry is the distribution
# registry the official `registry:2` image runs.
SWARM_NODE = "synapse-e2e/swarm-node:trixie"
SWARM_REGISTRY = "synapse-e2e/registry:trixie"
NODE_IMAGES = {SWARM_NODE: "Dockerfile.swarm-node", SWARM_REGISTRY: "Dockerfile.registry"}
NODE_PACKAGES = ["ca-certificates", "docker.io", "docker-cli", "iptables", "iproute2", "procps",
                 "docker-registry"]
TRIXIE_PACKAGES = ["ca-certificates", "gosu", "postgresql-17"]
TRIXIE_MIRRORS = [
    "deb http://deb.debian.org/debian trixie main",
    "deb http://deb.debian.org/debian trixie-updates main",
    "deb http://deb.debian.org/debian-security trixie-security main",
]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "synapse-e2e"


def inputs_hash():
    """Hash every build input: this script, hooks, rootfs files, Dockerfiles."""
    digest = hashlib.sha256()
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(HERE)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def current(client, tag, build_hash):
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return (image.labels or {}).get(HASH_LABEL) == build_hash


def uv_binary():
    """uv from PyPI, kept in a cache folder: it installs Synapse ~35 s faster than pip."""
    target = CACHE / f"uv-{UV_VERSION}"
    binary = target / "bin" / "uv"
    if not binary.exists():
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), f"uv=={UV_VERSION}"], check=True)
        print(f"uv {UV_VERSION} fetched: {time.monotonic() - started:.0f} s")
    return binary


def build_rootfs(client, build_hash, suite=SUITE, packages=PACKAGES, mirrors=MIRRORS,
                 essential="essential.sh", customize="customize.sh", name=None):
    """mmdebstrap piped straight into the engine: no tarball on disk."""
    hook = lambda name: f'sh {shlex.quote(str(HERE / "hooks" / name))} "$1"'
    command = [
        "mmdebstrap", "--variant=apt", "--format=tar",
        "--skip=cleanup/run",  # keeps /run/postgresql; customize.sh cleans the rest
        "--include=" + ",".join(packages),
        "--dpkgopt=" + str(HERE / "dpkg-excludes.cfg"),
        *(["--essential-hook=" + hook(essential)] if essential else []),
        "--customize-hook=" + hook(customize),
        suite, "-", *mirrors,
    ]
    env = dict(os.environ, E2E_UV=str(uv_binary()), E2E_SYNAPSE_REQUIREMENT=SYNAPSE_REQUIREMENT,
               E2E_SYNAPSE_PEER_REQUIREMENT=f"matrix-synapse[redis]=={PEER_SYNAPSE_VERSION}",
               E2E_SYNAPSE_PEER_EXCLUDE_NEWER=PEER_EXCLUDE_NEWER,
               E2E_ROOTFS_FILES=str(HERE / "rootfs"))
    name = name or (None if suite == SUITE else suite)
    tag = f"{name}-{build_hash[:12]}" if name else build_hash[:12]
    ref = f"{ROOTFS_REPO}:{tag}"
    log = CACHE / f"mmdebstrap-{name or suite}.log"
    with open(log, "w") as log_file, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, env=env) as bootstrap:
        result = client.api.import_image_from_stream(
            bootstrap.stdout, repository=ROOTFS_REPO, tag=tag,
            changes=[f"LABEL {HASH_LABEL}={build_hash}"])
    if bootstrap.returncode != 0 or "errorDetail" in result:
        try:  # an import of a truncated stream must not be mistaken for a rootfs
            client.images.remove(ref)
        except docker.errors.ImageNotFound:
            pass
        sys.stderr.writelines(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"rootfs build failed (mmdebstrap exit {bootstrap.returncode}, "
                         f"log {log}): {result}")
    return ref


def remove_stale(client, build_hash):
    """Delete earlier builds (untagged now, or of another hash) unless in use."""
    stale = lambda: [image for image in client.images.list(filters={"label": HASH_LABEL})
                     if not image.tags or image.labels.get(HASH_LABEL) != build_hash]
    for image in stale():
        for ref in image.tags or [image.id]:
            try:  # deleting a child also deletes its untagged parents
                client.images.remove(ref)
            except docker.errors.APIError:  # a parent of another stale image, or in use
                pass
    for image in stale():
        print(f"kept stale image {image.short_id}: a container still uses it")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    force = parser.parse_args().force

    started = time.monotonic()
    client = docker.from_env(timeout=600)  # the import answers after unpacking 475 MB
    build_hash = inputs_hash()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:  # parallel test runs build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and all(current(client, tag, build_hash)
                             for tag in (*IMAGES, *TRIXIE_IMAGES, *NODE_IMAGES)):
            print(f"stand-in images up to date ({build_hash[:12]}), "
                  f"checked in {time.monotonic() - started:.1f} s")
            return
        built = []
        for images, rootfs_args in ((IMAGES, {}),
                                    (TRIXIE_IMAGES, {"suite": "trixie", "packages": TRIXIE_PACKAGES,
                                                     "mirrors": TRIXIE_MIRRORS,
                                                     "essential": "essential-postgres.sh",
                                                     "customize": "customize-postgres.sh"}),
                                    (NODE_IMAGES, {"suite": "trixie", "packages": NODE_PACKAGES,
                                                   "mirrors": TRIXIE_MIRRORS, "essential": None,
                                                   "customize": "customize-node.sh",
                                                   "name": "trixie-node"})):
            rootfs = build_rootfs(client, build_hash, **rootfs_args)
            print(f"rootfs {rootfs}: {time.monotonic() - started:.0f} s")
            for tag, dockerfile in images.items():
                client.images.build(fileobj=io.BytesIO((HERE / dockerfile).read_bytes()), tag=tag,
                                    buildargs={"ROOTFS": rootfs}, rm=True, forcerm=True)
            size = client.images.get(rootfs).attrs["Size"] / 1e6
            built.append(f"{', '.join(images)} (rootfs {size:.0f} MB)")
        print(f"image configs: {time.monotonic() - started:.0f} s")
        remove_stale(client, build_hash)
    print(f"built {'; '.join(built)} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
