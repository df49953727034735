"""A federation peer the bed starts itself: one Synapse process of an older
release (the `matrixdotorg/synapse:v<PEER_SYNAPSE_VERSION>` stand-in), SQLite,
TLS terminated by Synapse on port 443, its config written here by hand from
Synapse's configuration manual, not by our renderer.

Port 443, so that `serve_server_wellknown` answers `<name>:443` and the server
is found without DNS SRV records (bed.py says why that matters here); binding it
as UID 991 takes the namespaced sysctl net.ipv4.ip_unprivileged_port_start=0.

A peer goes down the way a host's Synapse does: its process stops, the host
stays (`stop`/`resume`). Stopping the container instead would take its name off
the network, and every lookup of it would go to Docker's upstream DNS, off this
machine (dropped by DOCKER-USER, after a timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from tests.e2e.images.build import SYNAPSE_PEER
from tests.support.tls import Issued

SYNAPSE_UID = 991
ROOT = "/peer"  # the peer's folder in its container (bind-mounted)
# Synapse's PIDs, from /proc (it writes its pid_file only when daemonized).
SYNAPSE_PIDS = ('for p in /proc/[0-9]*; do [ "$(head -c 6 $p/cmdline 2>/dev/null)" = python ] '
                "&& echo ${p#/proc/}; done")
DOWN_FLAG = f"{ROOT}/down"  # while it exists, the supervisor starts no Synapse
# PID 1: (re)start Synapse unless told to stay down.
SUPERVISOR = (f"while :; do if [ -e {DOWN_FLAG} ]; then sleep 0.2; else "
              f"python -m synapse.app.homeserver --config-path {ROOT}/homeserver.yaml; fi; done")


def registration_secret(server_name: str) -> str:
    # Test-only and derived from the name: the peer is thrown away with the bed.
    return hashlib.sha256(f"fedbed registration {server_name}".encode()).hexdigest()


def config(server_name: str, extra: dict[str, Any]) -> dict[str, Any]:
    secret = lambda what: hashlib.sha256(f"fedbed {what} {server_name}".encode()).hexdigest()  # noqa: E731
    return {
        "server_name": server_name,
        "public_baseurl": f"https://{server_name}/",
        "report_stats": False,
        "listeners": [{
            "port": 443, "tls": True, "type": "http", "bind_addresses": ["0.0.0.0"],
            "x_forwarded": False,
            "resources": [{"names": ["client", "federation", "keys", "media"], "compress": False}],
        }],
        "tls_certificate_path": f"{ROOT}/tls.crt",
        "tls_private_key_path": f"{ROOT}/tls.key",
        "serve_server_wellknown": True,
        "federation_custom_ca_list": [f"{ROOT}/ca.pem"],
        "ip_range_whitelist": ["172.16.0.0/12", "192.168.0.0/16"],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "allow_public_rooms_over_federation": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "database": {"name": "sqlite3", "args": {"database": f"{ROOT}/data/homeserver.db"}},
        "media_store_path": f"{ROOT}/data/media",
        "signing_key_path": f"{ROOT}/signing.key",
        "log_config": f"{ROOT}/log.yaml",
        "registration_shared_secret": registration_secret(server_name),
        "macaroon_secret_key": secret("macaroon"),
        "form_secret": secret("form"),
        "enable_registration": False,
        "presence": {"enabled": True},
        # The tests send faster than Synapse's per-user default allows.
        "rc_message": {"per_second": 100, "burst_count": 200},
        "rc_joins": {"local": {"per_second": 10, "burst_count": 20},
                     "remote": {"per_second": 10, "burst_count": 20}},
        **extra,
    }


LOG_CONFIG = {
    "version": 1,
    "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - "
                                         "%(levelname)s - %(request)s - %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "precise"}},
    "loggers": {"twisted": {"level": "WARNING"}, "synapse.metrics": {"level": "WARNING"}},
    "root": {"level": "INFO", "handlers": ["console"]},
    "disable_existing_loggers": False,
}


def start(client: docker.DockerClient, folder: Path, server_name: str, port: int,
          cert: Issued, ca_pem: str, network: str, label: str, extra: dict[str, Any]) -> str:
    """Write the peer's folder and start its container on `network` (alias: its
    server name), publishing 443 on loopback `port`. Returns the container name."""
    (folder / "data").mkdir(parents=True)
    (folder / "homeserver.yaml").write_text(yaml.safe_dump(config(server_name, extra)))
    (folder / "log.yaml").write_text(yaml.safe_dump(LOG_CONFIG))
    (folder / "tls.crt").write_text(cert.fullchain)
    (folder / "tls.key").write_text(cert.key)
    (folder / "ca.pem").write_text(ca_pem)
    with open(folder / "signing.key", "w") as f:
        write_signing_keys(f, [generate_signing_key("a_peer")])
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, SYNAPSE_UID, SYNAPSE_UID)
    name = f"synapse-fedbed-{server_name.split('.')[0]}"
    container = client.containers.create(
        SYNAPSE_PEER, ["-c", SUPERVISOR], entrypoint=["/bin/sh"], name=name,
        user=f"{SYNAPSE_UID}:{SYNAPSE_UID}", network=network,
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        ports={"443/tcp": ("127.0.0.1", port)},
        volumes={str(folder): {"bind": ROOT, "mode": "rw"}},
        labels={label: "peer"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        stop_signal="SIGKILL")  # the shell loop ignores SIGTERM
    net = client.networks.get(network)
    net.disconnect(container)
    net.connect(container, aliases=[server_name])
    container.start()
    return name


def wait_healthy(url: str, ca_file: Path, timeout_s: float = 120) -> str:
    """Until the peer answers; returns the Synapse version it reports."""
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_matrix/federation/v1/version",
                                        context=context, timeout=5) as r:
                return json.load(r)["server"]["version"]
        except OSError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"peer at {url} not up after {timeout_s} s: {e}") from None
            time.sleep(0.5)


def stop(client: docker.DockerClient, container: str) -> None:
    """Synapse stops cleanly (SIGTERM) and stays down; the container stays up."""
    rc, out = client.containers.get(container).exec_run(
        ["sh", "-c", f"touch {DOWN_FLAG} && kill $({SYNAPSE_PIDS}) && "
                     f'while [ -n "$({SYNAPSE_PIDS})" ]; do sleep 0.2; done'])
    assert rc == 0, out


def resume(client: docker.DockerClient, container: str) -> None:
    rc, out = client.containers.get(container).exec_run(["rm", "-f", DOWN_FLAG])
    assert rc == 0, out
