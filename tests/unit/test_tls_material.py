"""The operator's TLS certificate and key, checked before deploy
(components/plan/tls_material.py): what is refused, naming the key, and what is only
said. The same refusals through every reader: test_validation.py."""

import pytest

from components.plan import tls_material
from components.plan.errors import ConfigError
from tests.support.certs import issued_chain, private_key_pem

BASE = "https://matrix.example.org/"


def check(names, server_name="example.org", base=BASE, **kw):
    chain, key, _ = issued_chain(names, **kw)
    return tls_material.check(chain, key, base, server_name)


def refused(chain, key, base=BASE, server_name="example.org") -> str:
    with pytest.raises(ConfigError) as e:
        tls_material.check(chain, key, base, server_name)
    return str(e.value)


def test_a_good_certificate_for_both_names_passes_without_a_word():
    assert check(["matrix.example.org", "example.org"]) == []


def test_a_wildcard_covers_one_label_only():
    assert check(["*.example.org", "example.org"]) == []
    chain, key, _ = issued_chain(["*.org"])
    assert "does not cover matrix.example.org" in refused(chain, key)


def test_an_ip_base_url_needs_an_ip_address_entry():
    assert check(["127.0.0.1"], base="https://127.0.0.1:8008/", server_name="127.0.0.1:8448") == []
    chain, key, _ = issued_chain(["localhost"])
    assert "does not cover 127.0.0.1" in refused(chain, key, base="https://127.0.0.1:8008/")


def test_a_key_of_another_certificate_is_refused_naming_tls_key():
    chain, _, _ = issued_chain(["matrix.example.org"])
    _, other, _ = issued_chain(["matrix.example.org"])
    message = refused(chain, other)
    assert "'synapse:tlsKey'" in message and "does not match the certificate" in message


def test_a_key_block_that_is_not_a_key_is_refused():
    chain, _, _ = issued_chain(["matrix.example.org"])
    garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    assert "not a readable unencrypted PEM private key" in refused(chain, garbage)


def test_a_chain_out_of_order_is_refused():
    chain, key, ca = issued_chain(["matrix.example.org"])
    leaf = chain[:-len(ca)]
    message = refused(ca + leaf, key)
    # The key is checked against the first certificate: the CA's is not it.
    assert "does not match" in message
    _, _, other_ca = issued_chain(["x"])
    message = refused(leaf + other_ca, key)
    assert "chain out of order: certificate 1" in message and "fullchain.pem" in message


def test_an_expired_certificate_is_refused_and_a_closely_expiring_one_said():
    chain, key, _ = issued_chain(["matrix.example.org"], expired=True)
    assert "expired on" in refused(chain, key)
    warnings = check(["matrix.example.org", "example.org"], days=10)
    assert len(warnings) == 1 and "expires on" in warnings[0] and "renew" in warnings[0]
    assert check(["matrix.example.org", "example.org"], days=20) == []


def test_a_server_name_with_a_port_is_served_here_so_it_must_be_covered():
    chain, key, _ = issued_chain(["matrix.example.org"])
    message = refused(chain, key, server_name="example.org:8448")
    assert "does not cover example.org" in message


def test_a_delegated_server_name_not_covered_is_only_said():
    warnings = check(["matrix.example.org"])
    assert len(warnings) == 1 and "does not cover the server name example.org" in warnings[0]


def test_a_private_key_of_the_wrong_kind_for_the_certificate_is_refused():
    chain, _, _ = issued_chain(["matrix.example.org"])
    assert "does not match" in refused(chain, private_key_pem())


def test_render_and_impact_say_the_warnings_and_still_work(tmp_path, capsys):
    import json

    from components.tools import impact
    from components.tools import render

    chain, key, _ = issued_chain(["matrix.example.org"], days=5)
    stack = tmp_path / "Pulumi.t.yaml"
    stack.write_text("config:\n  synapse:serverName: example.org\n"
                     "  synapse:publicBaseUrl: https://matrix.example.org/\n"
                     "  synapse:nginx:\n    tls: true\n"
                     f"  synapse:tlsCertificate: {json.dumps(chain)}\n"
                     f"  synapse:tlsKey: {json.dumps(key)}\n")
    assert render.main(["--config", str(stack), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: tlsCertificate expires on" in err
    assert "warning: tlsCertificate does not cover the server name example.org" in err
    assert impact.main(["--config", str(stack), "--against", str(stack), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)["warnings"]
    assert any("expires on" in w for w in said), said
