"""The rendered nginx.conf: `nginx -t` accepts it, and its shape follows the table."""

from __future__ import annotations

import dataclasses
import re

import pytest

from components.render import nginx_conf
from components.plan import routing
from components.render.nginx_conf import render_nginx_conf, well_known_server
from tests.nginx.conftest import DEV, NONE, PROD, SCALED, make_plan
from tests.nginx.harness import nginx_t

PLANS = {"dev": DEV, "prod": PROD, "no-workers": NONE, "scaled": SCALED}


@pytest.mark.parametrize("name", PLANS)
def test_nginx_accepts_the_config(name):
    # Also proves the guide's defect D1 (a comment without '#') and D2 (an undefined
    # variable) are gone: either makes `nginx -t` fail.
    result = nginx_t(render_nginx_conf(make_plan(PLANS[name])))
    assert result.returncode == 0, f"nginx -t failed for the {name} plan:\n{result.stderr}"


def test_nginx_accepts_allow_list_and_trusted_proxies():
    plan = make_plan(DEV, nginx={"adminAllow": ["10.0.0.0/8", "fd00::/8"],
                                 "trustedProxies": ["172.16.0.0/12", "::1"]})
    result = nginx_t(render_nginx_conf(plan))
    assert result.returncode == 0, result.stderr


def _directives(conf: str, name: str) -> list[str]:
    return re.findall(rf"(?m)^\s*{name}\b(.*);$", conf)


def test_config_is_self_contained():
    conf = render_nginx_conf(make_plan(PROD))
    for name in ("include", "user", "daemon"):
        assert not _directives(conf, name), f"unexpected `{name}` directive"


def test_config_listens_on_both_ports_the_admin_port_and_the_health_socket():
    conf = render_nginx_conf(make_plan(DEV))
    listens = [a.strip() for a in _directives(conf, "listen")]
    assert listens == [*map(str, nginx_conf.LISTEN_PORTS), str(nginx_conf.PORTS["admin"]),
                       f"unix:{nginx_conf.HEALTH_SOCKET}"]


def test_tls_listens_with_ssl_and_redirects_plain_http():
    conf = render_nginx_conf(make_plan(DEV, publicBaseUrl="https://matrix.example.org:8443/",
                                       nginx={"tls": True}))
    listens = [a.strip() for a in _directives(conf, "listen")]
    assert listens == [*(f"{p} ssl http2" for p in nginx_conf.LISTEN_PORTS),
                       str(nginx_conf.PORTS["admin"]), f"unix:{nginx_conf.HEALTH_SOCKET}",
                       str(nginx_conf.PORTS["http"])]
    assert [a.strip() for a in _directives(conf, "ssl_protocols")] == ["TLSv1.2 TLSv1.3"]
    assert [a.strip() for a in _directives(conf, "ssl_session_tickets")] == ["off"]
    assert "return 301 https://matrix.example.org:8443$request_uri;" in conf


def test_body_size_limit_follows_the_upload_limit():
    conf = render_nginx_conf(make_plan(DEV, maxUploadSizeMb=123))
    assert [a.strip() for a in _directives(conf, "client_max_body_size")] == ["123m"]


def test_routing_map_keeps_the_table_order():
    conf = render_nginx_conf(make_plan(PROD))
    block = conf.split("$synapse_route {", 1)[1].split("}", 1)[0]
    names = re.findall(r"(?m)\s(\w+);$", block)
    assert names == [r.name for r in routing.ROUTES], names


@pytest.mark.parametrize("name", ["prod", "scaled"])
def test_every_inbound_socket_is_an_upstream_server(name):
    plan = make_plan(PLANS[name])
    servers = set(re.findall(r"server unix:(\S+) ", render_nginx_conf(plan)))
    sockets = {p.inbound.path for p in plan.processes if p.inbound}
    assert servers == sockets, f"unreached: {sockets - servers}, unknown: {servers - sockets}"


def test_rendering_is_deterministic():
    assert render_nginx_conf(make_plan(PROD)) == render_nginx_conf(make_plan(PROD))


def test_a_writer_without_an_inbound_socket_is_refused():
    plan = make_plan(PROD)
    broken = dataclasses.replace(plan, stream_writers={**plan.stream_writers, "typing": ("tasks1",)})
    with pytest.raises(ValueError, match="tasks1"):
        render_nginx_conf(broken)


def test_a_dollar_in_a_well_known_answer_is_refused():
    plan = make_plan(DEV)
    settings = dataclasses.replace(plan.settings, public_base_url="https://example.org/$x/")
    with pytest.raises(ValueError, match=r"\$"):
        render_nginx_conf(dataclasses.replace(plan, settings=settings))


@pytest.mark.parametrize("url,server", [
    ("https://example.org/", "example.org:443"),
    ("https://matrix.example.org:8448/", "matrix.example.org:8448"),
    ("http://localhost:8008/", "localhost:8008"),
    ("http://example.org/", "example.org:80"),
    ("https://[2001:db8::1]/", "[2001:db8::1]:443"),
])
def test_well_known_server_from_the_public_base_url(url, server):
    assert well_known_server(url) == server
