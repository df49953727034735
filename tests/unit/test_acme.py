"""nginx.tls: acme without Docker: the settings it reads and refuses, and what
the plan gives each container (the ACME client, nginx, nginx-config, Prometheus).
The client's script runs for real in tests/nginx/test_acme.py (busybox, lego,
Pebble) and tests/e2e/test_acme.py (the stack on Docker)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from components.docker.container_inputs import container_inputs
from components.plan.errors import ConfigError
from components.plan.settings import LETS_ENCRYPT, check_required_secrets, load_settings
from components.plan.topology import build_plan
from components.render import acme_conf, nginx_conf, prometheus_conf
from components.render.containers import NGINX_UID, build_deployment
from tests.support.tls import issue

BASE = {"serverName": "example.org", "publicBaseUrl": "https://matrix.example.org/",
        "nginx": {"tls": "acme", "acme": {"email": "ops@example.org"}}}


def settings(**changes):
    raw = {**BASE, **changes}
    return load_settings(raw, "test")


def acme_of(**nginx_acme):
    return settings(nginx={"tls": "acme", "acme": {"email": "ops@example.org", **nginx_acme}}
                    ).nginx.acme


def test_defaults_are_lets_encrypts_production_directory_and_30_days():
    a = acme_of()
    assert (a.directory, a.renew_days, a.retry_seconds, a.ca_bundle) == (LETS_ENCRYPT, 30, 300, None)
    assert settings().nginx.tls and not settings().nginx.certificate_given


@pytest.mark.parametrize("server_name, names", [
    # Delegated through the well-known this nginx serves on publicBaseUrl's host.
    ("example.org", ("matrix.example.org",)),
    # Served directly on a port: federation asks this nginx for that name too.
    ("example.org:8448", ("matrix.example.org", "example.org")),
    ("matrix.example.org", ("matrix.example.org",)),
])
def test_the_names_are_what_clients_and_servers_ask_this_nginx_for(server_name, names):
    assert settings(serverName=server_name).nginx.acme.names == names


@pytest.mark.parametrize("nginx, key, reason", [
    ({"tls": "acme"}, "synapse:nginx.acme.email", "is required"),
    ({"tls": "acme", "acme": {"email": "not an address"}}, "synapse:nginx.acme.email",
     "e-mail address"),
    ({"tls": "acme", "acme": {"email": "a@b.org", "directory": "http://acme.example/dir"}},
     "synapse:nginx.acme.directory", "https URL"),
    ({"tls": "acme", "acme": {"email": "a@b.org", "caBundle": "-----BEGIN CERTIFICATE-----\nx\n"
                                                          "-----END CERTIFICATE-----\n"}},
     "synapse:nginx.acme.caBundle", "not readable PEM"),
    ({"tls": "acme", "acme": {"email": "a@b.org", "renewDays": 0}}, "synapse:nginx.acme.renewDays",
     "between 1 and 365"),
    ({"tls": "acme", "acme": {"email": "a@b.org", "retrySeconds": True}},
     "synapse:nginx.acme.retrySeconds", "integer"),
    ({"tls": "acme", "acme": {"email": "a@b.org", "staging": True}}, "synapse:nginx.acme.staging",
     "unknown key"),
    ({"tls": True, "acme": {"email": "a@b.org"}}, "synapse:nginx.acme",
     "only with nginx.tls: acme"),
    ({"tls": "ACME", "acme": {"email": "a@b.org"}}, "synapse:nginx.tls", "true, false or acme"),
])
def test_bad_acme_config_names_the_key(nginx, key, reason):
    with pytest.raises(ConfigError) as err:
        settings(nginx=nginx)
    assert err.value.key == key and reason in err.value.reason, err.value


def test_extra_names_are_added_once_and_must_be_dns_names():
    assert acme_of(extraNames=["example.org", "MATRIX.example.org"]).names == (
        "matrix.example.org", "example.org")
    for bad in ("*.example.org", "not a name", "192.0.2.7"):
        with pytest.raises(ConfigError, match="a DNS name") as err:
            acme_of(extraNames=[bad])
        assert err.value.key == "synapse:nginx.acme.extraNames[0]", bad


def test_a_left_out_server_name_and_another_http_port_are_warned_about():
    from components.plan.stack_config import _check_tls
    s = settings(nginx={"tls": "acme", "httpPort": 8080, "acme": {"email": "ops@example.org"}})
    port, name = _check_tls(s, {})
    assert "httpPort is 8080" in port and "forward port 80" in port
    assert "not cover the server name example.org" in name and "extraNames" in name
    covered = settings(nginx={"tls": "acme", "acme": {"email": "ops@example.org",
                                                      "extraNames": ["example.org"]}})
    assert _check_tls(covered, {}) == []


def test_an_ip_address_cannot_be_proven_by_http_01():
    with pytest.raises(ConfigError, match="IP address") as err:
        settings(publicBaseUrl="https://192.0.2.7/")
    assert err.value.key == "synapse:nginx.tls"


def test_a_ca_bundle_with_a_key_in_it_is_refused(tmp_path):
    issued = issue(tmp_path, ["acme.example"])
    with pytest.raises(ConfigError, match="certificates only"):
        acme_of(caBundle=issued.ca_cert.read_text() + issued.key)
    assert acme_of(caBundle=issued.ca_cert.read_text()).ca_bundle == issued.ca_cert.read_text()


def test_the_operators_certificate_is_refused_in_acme_mode_and_required_otherwise():
    with pytest.raises(ConfigError, match="pulumi config rm synapse:tlsCertificate"):
        check_required_secrets(settings(), {"tlsCertificate", "tlsKey"})
    check_required_secrets(settings(), set())
    given = settings(nginx={"tls": True})
    with pytest.raises(ConfigError, match="is required when nginx.tls is true"):
        check_required_secrets(given, set())


def test_swarm_refuses_acme():
    with pytest.raises(ConfigError, match="not available on target swarm") as err:
        settings(target="swarm", nginx={"tls": "acme", "bindAddress": "0.0.0.0",
                                        "acme": {"email": "a@b.org"}})
    assert err.value.key == "synapse:nginx.tls"


# --- what the plan gives each container -------------------------------------------


@pytest.fixture(scope="module")
def acme_deployment(tmp_path_factory):
    ca = issue(tmp_path_factory.mktemp("ca"), ["acme.example"]).ca_cert.read_text()
    s = settings(serverName="example.org:8448", nginx={"tls": "acme", "acme": {
        "email": "ops@example.org", "directory": "https://acme.example/dir", "caBundle": ca}})
    return build_plan(s), build_deployment(build_plan(s)), ca


def test_the_client_runs_legos_image_as_it_does_with_nothing_more(acme_deployment):
    plan, d, ca = acme_deployment
    c = d.container("acme")
    assert c.image == "goacme/lego:v4.9.1" and c.entrypoint == ("/bin/sh",)
    assert c.command == (acme_conf.RUN_SCRIPT,)
    assert c.privileges.user is None and c.privileges.cap_add == ()  # the image's root, no caps
    assert c.networks == ("frontend",) and c.depends_on == ("nginx",)
    assert dict(c.env) == {"LEGO_CA_CERTIFICATES": acme_conf.CA_BUNDLE}
    files = c.rendered_files()
    assert files[acme_conf.CA_BUNDLE] == ca
    assert not any(f.secret for f in c.files)  # nothing secret goes through Pulumi
    assert {(m.volume, m.target, m.read_only) for m in c.mounts} == {
        ("acme-data", acme_conf.STORE, False), ("acme-public", acme_conf.PUBLIC, False)}
    script = files[acme_conf.RUN_SCRIPT]
    assert "--domains matrix.example.org --domains example.org" in script
    assert "--server https://acme.example/dir" in script and "--email ops@example.org" in script
    # `up` does not wait for a certificate: an ACME server that is down must not fail it.
    assert container_inputs(c, d, plan.settings.sizes)["wait"] is False
    assert container_inputs(d.container("nginx"), d, plan.settings.sizes)["wait"] is True


def test_the_script_is_posix_sh(acme_deployment):
    script = acme_deployment[1].container("acme").rendered_files()[acme_conf.RUN_SCRIPT]
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_the_store_is_kept_and_the_shared_volume_is_memory_nginx_may_only_read(acme_deployment):
    _, d, _ = acme_deployment
    volumes = {v.key: v for v in d.volumes}
    assert volumes["acme-data"].retain and not volumes["acme-data"].driver_opts
    public = volumes["acme-public"]
    assert not public.retain and public.shared
    assert public.driver_opts["type"] == "tmpfs"
    assert public.driver_opts["o"] == f"uid=0,gid={NGINX_UID},mode=0750"
    for key in ("nginx", "nginx-config"):
        mounts = {m.volume: m for m in d.container(key).mounts}
        assert mounts["acme-public"].read_only and mounts["acme-public"].target == acme_conf.PUBLIC


def test_nginx_reloads_on_the_clients_include_and_nginx_config_stages_no_certificate(
        acme_deployment):
    _, d, _ = acme_deployment
    publisher = d.container("nginx-config")
    assert not any(f.secret for f in publisher.files)
    assert acme_conf.CERTIFICATE_CONF in " ".join(publisher.healthcheck.test)
    assert acme_conf.CERTIFICATE_CONF in d.container("nginx").entrypoint[2]  # its run.sh


def test_nginx_conf_refuses_tls_until_a_certificate_and_serves_challenges(acme_deployment):
    plan, _, _ = acme_deployment
    conf = nginx_conf.render_nginx_conf(plan)
    assert "    ssl_reject_handshake on;" in conf  # the http block's
    assert "include /acme-public/live/certificate[.]conf;" in conf
    assert "ssl_certificate " not in conf
    assert f"location ^~ {acme_conf.CHALLENGE_PREFIX}" in conf.replace('"^~"', "^~")
    assert f"listen {acme_conf.METRICS_PORT};" in conf


def test_prometheus_scrapes_the_clients_metrics_through_nginx(acme_deployment):
    plan, _, _ = acme_deployment
    jobs = {j["job_name"]: j for j in yaml.safe_load(
        prometheus_conf.render_prometheus_conf(plan))["scrape_configs"]}
    assert jobs[prometheus_conf.ACME_JOB]["static_configs"] == [
        {"targets": [f"synapse-test-nginx:{acme_conf.METRICS_PORT}"]}]
    without = build_plan(load_settings({"serverName": "example.org"}, "test"))
    assert prometheus_conf.ACME_JOB not in prometheus_conf.render_prometheus_conf(without)
