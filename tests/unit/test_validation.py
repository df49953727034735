"""One reader, every caller. Each bad stack file below is refused by the shared
reader (stack_config.read_stack_file), the render command, the impact report (as
the new and as the deployed config) and the Pulumi program (under mocks, fed the
config pairs the Pulumi CLI would hand it) with the same one line naming the key:
exit status 2, no traceback, no file written, no resource registered. The tricky
good ones are accepted by all of them alike, with the same settings.

`secure:` values here are "fake:<plaintext>"; the program's path decrypts them as
the Pulumi CLI would (fake_decrypt), the render command cannot.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pulumi
import pytest

from components.tools import impact
from components.tools import render
from components import program
from components.plan.errors import ConfigError
from components.plan.stack_config import Encrypted, override_arg, read_stack_file
from tests.support.capture import _run, install_pairs, stack_file_pairs
from tests.support.certs import issued_chain, private_key_pem, self_signed

DEV = Path("config/Pulumi.dev.yaml")
DIGEST = "sha256:" + "0123456789abcdef" * 4
GOOD_KEY = "ed25519 a_abc " + "A" * 43
# PEM as one JSON-quoted YAML scalar (YAML reads JSON strings).
q = json.dumps
LEAF, EXPIRED_CA, A_KEY = self_signed("leaf", ca=False), self_signed(expired=True), private_key_pem()
CHAIN, CHAIN_KEY, _ = issued_chain(["example.org"])
OTHER_CHAIN, OTHER_KEY, _ = issued_chain(["example.org"])
TLS_ON = "synapse:nginx:\n  tls: true\n"


def fake_decrypt(ciphertext: str) -> str:
    assert ciphertext.startswith("fake:"), ciphertext
    return ciphertext[len("fake:"):]


def stack_text(body: str, server_name: bool = True) -> str:
    """A stack file: `config:` with serverName set (unless told) and `body`."""
    lines = ["config:"] + (["  synapse:serverName: example.org"] if server_name else [])
    lines += ["  " + line for line in textwrap.dedent(body).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def case(id, body, key, reason, *, server_name=True, whole=False, pulumi_loads=True):
    """A bad stack file. `whole`: body is the whole file. `pulumi_loads=False`: the
    Pulumi CLI refuses the file itself, so no program ever runs."""
    text = body if whole else stack_text(body, server_name)
    return pytest.param(text, key, reason, pulumi_loads, id=id)


BAD = [
    # --- the file and its config section (Pulumi refuses to load these) ---
    case("file-is-a-list", "- config\n", "<stack file>", "must be a YAML mapping",
         whole=True, pulumi_loads=False),
    case("file-is-a-scalar", "hello\n", "<stack file>", "got the scalar 'hello'",
         whole=True, pulumi_loads=False),
    case("config-is-a-list", "config:\n  - synapse:serverName\n", "config",
         "must be a mapping of <namespace>:<key>", whole=True, pulumi_loads=False),
    case("config-is-a-string", "config: synapse:serverName=example.org\n", "config",
         "got the scalar", whole=True, pulumi_loads=False),
    case("key-repeated", "synapse:serverName: example.net", "synapse:serverName",
         "is given twice (lines 2 and 3)", pulumi_loads=False),
    case("key-repeated-nested", "synapse:nginx:\n  clientPort: 8008\n  clientPort: 8009",
         "synapse:nginx.clientPort", "is given twice", pulumi_loads=False),
    case("key-with-and-without-namespace", "serverName: example.net", "synapse:serverName",
         "is given twice, as 'synapse:serverName' and 'serverName'", pulumi_loads=False),
    case("key-with-two-colons", "synapse:nginx:clientPort: 8008", "synapse:nginx:clientPort",
         "Pulumi reads keys as <namespace>:<name>", pulumi_loads=False),
    # --- namespaces ---
    case("namespace-misspelt", "synpase:maxUploadSizeMb: 100", "synpase:maxUploadSizeMb",
         "did you mean synapse:maxUploadSizeMb?"),
    case("namespace-capitalised", "Synapse:egress: false", "Synapse:egress",
         "is not this project's"),
    case("namespace-empty", ":egress: false", ":egress", "is not this project's"),
    case("namespace-one-letter-off", "synapsee:preset: large", "synapsee:preset",
         "did you mean synapse:preset?"),
    case("dotted-key-without-path", "synapse:workers.rooms: 8", "synapse:workers.rooms",
         "pulumi config set --path"),
    case("no-namespace-unknown-key", "maxUploadSizeMB: 100", "synapse:maxUploadSizeMB",
         "unknown key"),
    # --- values as `pulumi config set` writes them, and YAML as Pulumi reads it ---
    case("top-level-string-not-a-number", 'synapse:maxUploadSizeMb: "lots"',
         "synapse:maxUploadSizeMb", "must be an integer, got str 'lots'"),
    case("top-level-float-text", 'synapse:maxUploadSizeMb: "1e3"', "synapse:maxUploadSizeMb",
         "must be an integer, got float 1000.0"),
    # Only a top-level value is read as JSON: a nested string stays a string.
    case("nested-number-as-string", 'synapse:workers:\n  rooms: "1e1"', "synapse:workers.rooms",
         "must be an integer, got str '1e1'"),
    case("top-level-yes-is-not-a-bool", "synapse:egress: yes", "synapse:egress",
         "must be true or false, got str 'yes'"),
    case("top-level-quoted-yes", 'synapse:reportStats: "yes"', "synapse:reportStats",
         "must be true or false, got str 'yes'"),
    case("nested-on-is-not-a-bool", "synapse:nginx:\n  servedByHeader: on",
         "synapse:nginx.servedByHeader", "must be true or false, got str 'on'"),
    case("top-level-empty", "synapse:egress:", "synapse:egress",
         "must be true or false, got str ''"),
    case("server-name-empty", "synapse:serverName:", "synapse:serverName", "is required",
         server_name=False),
    case("path-typed-string", 'synapse:workers:\n  rooms: "8"', "synapse:workers.rooms",
         "must be an integer, got str '8'"),
    case("path-float", "synapse:workers:\n  rooms: 1.5", "synapse:workers.rooms",
         "must be an integer, got float 1.5"),
    case("path-bool", "synapse:workers:\n  rooms: true", "synapse:workers.rooms",
         "must be an integer, got True"),
    case("path-null", "synapse:workers:\n  rooms:", "synapse:workers.rooms",
         "must be an integer, got NoneType None"),
    case("object-as-json-list", 'synapse:workers: "[1, 2]"', "synapse:workers",
         "must be an object, got list"),
    case("object-as-text", "synapse:nginx: bindAddress=0.0.0.0", "synapse:nginx",
         "must be an object, got str"),
    case("list-as-text", "synapse:trustedKeyServers: matrix.org", "synapse:trustedKeyServers",
         "must be a list of server names, got str"),
    case("unknown-key", "synapse:wokers:\n  rooms: 2", "synapse:wokers", "unknown key"),
    case("unknown-nested-key", "synapse:workers:\n  room: 2", "synapse:workers.room",
         "unknown key"),
    case("workers-negative", "synapse:workers:\n  rooms: -1", "synapse:workers.rooms",
         "between 0 and 64"),
    case("workers-too-many", "synapse:workers:\n  rooms: 65", "synapse:workers.rooms",
         "between 0 and 64"),
    case("workers-beyond-database-connections", "synapse:workers:\n  rooms: 48",
         "synapse:workers", "database connections"),
    case("preset-unknown", "synapse:preset: huge", "synapse:preset", "must be one of"),
    case("yaml-tag-mismatch", "synapse:maxUploadSizeMb: !!int lots", "synapse:maxUploadSizeMb",
         "cannot be read as YAML !!int", pulumi_loads=False),
    # --- server name and URLs ---
    case("server-name-spaces", "synapse:serverName: bad name", "synapse:serverName",
         "DNS name", server_name=False),
    case("server-name-empty-port", 'synapse:serverName: "example.org:"', "synapse:serverName",
         "DNS name", server_name=False),
    case("server-name-port-zero", "synapse:serverName: example.org:0", "synapse:serverName",
         "DNS name", server_name=False),
    case("server-name-port-out-of-range", "synapse:serverName: example.org:65536",
         "synapse:serverName", "DNS name", server_name=False),
    case("url-scheme-ftp", "synapse:publicBaseUrl: ftp://example.org/", "synapse:publicBaseUrl",
         "the scheme must be http:// or https://"),
    case("url-no-scheme", "synapse:publicBaseUrl: matrix.example.org", "synapse:publicBaseUrl",
         "the scheme must be http"),
    case("url-port-out-of-range", "synapse:publicBaseUrl: https://example.org:70000/",
         "synapse:publicBaseUrl", "the port '70000' is not a number between 1 and 65535"),
    case("url-port-zero", "synapse:publicBaseUrl: https://example.org:0/",
         "synapse:publicBaseUrl", "the port '0'"),
    case("url-port-not-a-number", "synapse:publicBaseUrl: https://example.org:https/",
         "synapse:publicBaseUrl", "the port 'https'"),
    case("url-port-empty", "synapse:publicBaseUrl: https://example.org:/",
         "synapse:publicBaseUrl", "the port ''"),
    case("url-userinfo", "synapse:publicBaseUrl: https://admin:pw@example.org/",
         "synapse:publicBaseUrl", "no user info"),
    case("url-query", "synapse:publicBaseUrl: https://example.org/?a=b", "synapse:publicBaseUrl",
         "no query"),
    case("url-empty-query", "synapse:publicBaseUrl: https://example.org/?",
         "synapse:publicBaseUrl", "no query"),
    case("url-fragment", "synapse:publicBaseUrl: https://example.org/#top",
         "synapse:publicBaseUrl", "no fragment"),
    case("url-space", 'synapse:publicBaseUrl: "https://matrix.example.org/a b"',
         "synapse:publicBaseUrl", "a space or a control character"),
    case("url-newline", 'synapse:publicBaseUrl: "https://example.org/\\n"',
         "synapse:publicBaseUrl", "a space or a control character"),
    case("url-no-host", "synapse:publicBaseUrl: https:///matrix", "synapse:publicBaseUrl",
         "it has no host"),
    case("url-bad-host", "synapse:publicBaseUrl: https://exa_mple.org/", "synapse:publicBaseUrl",
         "is not a DNS name or an IP address"),
    case("url-bad-ipv6", "synapse:publicBaseUrl: https://[fe80::zz]/", "synapse:publicBaseUrl",
         "not an IPv6 address"),
    case("url-bad-escape", "synapse:publicBaseUrl: https://example.org/%zz/",
         "synapse:publicBaseUrl", "bad % escape"),
    case("url-not-a-string", "synapse:publicBaseUrl:\n  host: example.org",
         "synapse:publicBaseUrl", "must be an http(s) URL"),
    # --- image references Docker would refuse ---
    case("image-uppercase-repository", "synapse:images:\n  synapse: matrixdotorg/Synapse:v1.163.2",
         "synapse:images.synapse", "must be lowercase"),
    case("image-tag-too-long", f"synapse:images:\n  nginx: nginx:{'a' * 129}",
         "synapse:images.nginx", "the tag must be 1 to 128"),
    case("image-tag-bad-character", "synapse:images:\n  nginx: nginx:1.22+1",
         "synapse:images.nginx", "the tag must be"),
    case("image-tag-empty", "synapse:images:\n  redis: 'redis:'", "synapse:images.redis",
         "the tag must be"),
    case("image-tag-leading-dot", "synapse:images:\n  redis: redis:.7", "synapse:images.redis",
         "not starting with '.' or '-'"),
    case("image-digest-short", "synapse:images:\n  postgres: postgres@sha256:abc",
         "synapse:images.postgres", "the digest must be"),
    case("image-digest-uppercase", f"synapse:images:\n  postgres: postgres@{DIGEST.upper().replace('SHA', 'sha')}",
         "synapse:images.postgres", "64 lowercase hexadecimal digits"),
    case("image-digest-algorithm", f"synapse:images:\n  postgres: postgres@md5:{'a' * 32}",
         "synapse:images.postgres", "digest algorithm 'md5'"),
    case("image-empty-path-component", "synapse:images:\n  redis: library//redis:7",
         "synapse:images.redis", "the name must be"),
    case("image-space", "synapse:images:\n  nginx: nginx 1.22", "synapse:images.nginx",
         "the name must be"),
    case("image-leading-separator", "synapse:images:\n  postgres: -postgres:15",
         "synapse:images.postgres", "the name must be"),
    case("image-registry-port-not-a-number",
         "synapse:images:\n  synapse: registry.example.com:abc/matrix/synapse:v1.163.2",
         "synapse:images.synapse", "the name must be"),
    case("image-is-an-id", f"synapse:images:\n  redis: '{'ab' * 32}'", "synapse:images.redis",
         "is an image ID"),
    case("image-empty", "synapse:images:\n  nginx: ''", "synapse:images.nginx",
         "must be an image reference"),
    case("image-unknown-role", "synapse:images:\n  matrix: matrixdotorg/synapse",
         "synapse:images.matrix", "unknown key"),
    # --- Synapse older than this program needs ---
    case("synapse-1.88", "synapse:images:\n  synapse: matrixdotorg/synapse:v1.88.0",
         "synapse:images.synapse", "tag 'v1.88.0' is Synapse 1.88; this program needs Synapse >= 1.126"),
    case("synapse-1.100", "synapse:images:\n  synapse: matrixdotorg/synapse:v1.100.0",
         "synapse:images.synapse", "is Synapse 1.100; this program needs Synapse >= 1.126"),
    case("synapse-1.125-rc", "synapse:images:\n  synapse: matrixdotorg/synapse:v1.125.0rc1",
         "synapse:images.synapse", "is Synapse 1.125"),
    case("synapse-unprefixed-version", "synapse:images:\n  synapse: ghcr.io/element-hq/synapse:1.120.0",
         "synapse:images.synapse", "is Synapse 1.120"),
    case("synapse-old-tag-with-digest", f"synapse:images:\n  synapse: matrixdotorg/synapse:v1.98.0@{DIGEST}",
         "synapse:images.synapse", "is Synapse 1.98"),
    # --- secrets given in the stack file ---
    case("secret-too-short", "synapse:postgresPassword: short", "synapse:postgresPassword",
         "must be at least 16 characters"),
    case("secret-number", "synapse:macaroonSecretKey: 123456", "synapse:macaroonSecretKey",
         "must be at least 16 characters"),
    case("secret-empty", "synapse:formSecret:", "synapse:formSecret", "at least 16"),
    case("signing-key-format", 'synapse:signingKey: "ed25519 a_x notbase64"', "synapse:signingKey",
         "ed25519 a_<id>"),
    case("signing-key-without-version", f"synapse:signingKey: ed25519 {'A' * 43}",
         "synapse:signingKey", "ed25519 a_<id>"),
    case("secret-secure-not-a-string", "synapse:signingKey:\n  secure: 5",
         "synapse:signingKey.secure", "must be the ciphertext string"),
    case("secret-secure-with-company", "synapse:formSecret:\n  secure: fake:aaaaaaaaaaaaaaaaaaaa\n  note: x",
         "synapse:formSecret", "must be a string, got an object"),
    case("secret-list", "synapse:registrationSharedSecret: [aaaaaaaaaaaaaaaa]",
         "synapse:registrationSharedSecret", "must be a string, got a list"),
    case("secure-on-a-plain-key", "synapse:publicBaseUrl:\n  secure: fake:https://example.org/",
         "synapse:publicBaseUrl", "only the secret keys and secretConfig may be"),
    case("secure-nested-in-a-plain-key", "synapse:workers:\n  rooms:\n    secure: fake:8",
         "synapse:workers", "only the secret keys and secretConfig may be"),
    # --- the rest of the settings ---
    case("bind-address-name", "synapse:nginx:\n  bindAddress: localhost",
         "synapse:nginx.bindAddress", "IP address"),
    case("client-port-zero", "synapse:nginx:\n  clientPort: 0", "synapse:nginx.clientPort",
         "between 1 and 65535"),
    case("client-port-string", 'synapse:nginx:\n  clientPort: "8008"', "synapse:nginx.clientPort",
         "must be an integer, got str '8008'"),
    case("ports-equal", "synapse:nginx:\n  federationPort: 8008", "synapse:nginx.federationPort",
         "8008 is already nginx.clientPort"),
    case("admin-allow-bad-cidr", "synapse:nginx:\n  adminAllow: [10.0.0.0/33]",
         "synapse:nginx.adminAllow[0]", "CIDR"),
    case("admin-port-clash", "synapse:nginx:\n  adminPort: 8448", "synapse:nginx.adminPort",
         "8448 is already nginx.federationPort"),
    case("admin-bind-name", "synapse:nginx:\n  adminBindAddress: localhost",
         "synapse:nginx.adminBindAddress", "IP address"),
    case("tls-not-bool", "synapse:nginx:\n  tls: 'yes'", "synapse:nginx.tls", "true, false or acme"),
    case("tls-with-http-base-url", "synapse:publicBaseUrl: http://m.example.org/\n"
         "synapse:nginx:\n  tls: true", "synapse:nginx.tls", "needs an https publicBaseUrl"),
    case("tls-without-certificate", "synapse:nginx:\n  tls: true", "synapse:tlsCertificate",
         "is required when nginx.tls is true"),
    case("tls-certificate-not-pem", "synapse:nginx:\n  tls: true\n"
         "synapse:tlsCertificate: not a certificate\nsynapse:tlsKey: not a key",
         "synapse:tlsCertificate", "must be PEM certificates only"),
    case("tls-key-of-another-certificate", f"{TLS_ON}synapse:tlsCertificate: {q(CHAIN)}\n"
         f"synapse:tlsKey: {q(OTHER_KEY)}", "synapse:tlsKey", "does not match the certificate"),
    case("tls-key-body-not-a-key", f"{TLS_ON}synapse:tlsCertificate: {q(CHAIN)}\nsynapse:tlsKey: "
         f"{q('-----BEGIN PRIVATE KEY-----' + chr(10) + 'AAAA' + chr(10) + '-----END PRIVATE KEY-----')}",
         "synapse:tlsKey", "not a readable unencrypted PEM private key"),
    case("tls-certificate-other-name", f"{TLS_ON}synapse:publicBaseUrl: https://m.example.net/\n"
         f"synapse:tlsCertificate: {q(CHAIN)}\nsynapse:tlsKey: {q(CHAIN_KEY)}",
         "synapse:tlsCertificate", "does not cover m.example.net"),
    case("http-port-clash", "synapse:nginx:\n  tls: true\n  httpPort: 8009",
         "synapse:nginx.httpPort", "8009 is already nginx.adminPort"),
    case("metrics-not-object", "synapse:metrics: on", "synapse:metrics", "an object"),
    case("metrics-unknown-key", "synapse:metrics:\n  enable: true", "synapse:metrics.enable",
         "unknown key"),
    case("metrics-enabled-text", "synapse:metrics:\n  enabled: 'yes'", "synapse:metrics.enabled",
         "true or false"),
    case("metrics-port-clash", "synapse:metrics:\n  port: 8009", "synapse:metrics.port",
         "8009 is already nginx.adminPort"),
    case("metrics-port-range", "synapse:metrics:\n  port: 70000", "synapse:metrics.port",
         "between 1 and 65535"),
    case("metrics-scrape-interval-zero", "synapse:metrics:\n  scrapeIntervalSeconds: 0",
         "synapse:metrics.scrapeIntervalSeconds", "between 1 and 3600"),
    case("metrics-retention-float", "synapse:metrics:\n  retentionDays: 1.5",
         "synapse:metrics.retentionDays", "an integer"),
    # Secrets in extraConfig (components/plan/secret_options.py): each named option, nested ones too.
    case("extra-smtp-pass", "synapse:extraConfig:\n  email: {smtp_host: mx, smtp_pass: hunter22}",
         "synapse:extraConfig.email.smtp_pass", "holds a secret (Synapse's email.smtp_pass"),
    case("extra-oidc-client-secret", "synapse:extraConfig:\n  oidc_providers:\n"
         "    - {idp_id: a, client_id: x}\n    - {idp_id: b, client_id: y, client_secret: s}",
         "synapse:extraConfig.oidc_providers[1].client_secret", "put the whole 'oidc_providers'"),
    case("extra-oidc-jwt-key", "synapse:extraConfig:\n  oidc_providers:\n"
         "    - {idp_id: a, client_secret_jwt_key: {key: k, jwt_header: {alg: ES256}}}",
         "synapse:extraConfig.oidc_providers[0].client_secret_jwt_key.key", "holds a secret"),
    case("extra-legacy-oidc", "synapse:extraConfig:\n  oidc_config: {client_secret: s}",
         "synapse:extraConfig.oidc_config.client_secret", "holds a secret"),
    case("extra-jwt-secret", "synapse:extraConfig:\n  jwt_config: {enabled: true, secret: s}",
         "synapse:extraConfig.jwt_config.secret", "jwt.py"),
    case("extra-recaptcha-private", "synapse:extraConfig:\n  recaptcha_private_key: k",
         "synapse:extraConfig.recaptcha_private_key", "captcha.py"),
    case("extra-recaptcha-public", "synapse:extraConfig:\n  recaptcha_public_key: k",
         "synapse:extraConfig.recaptcha_public_key", "captcha.py"),
    case("extra-turn-secret", "synapse:extraConfig:\n  turn_shared_secret: t",
         "synapse:extraConfig.turn_shared_secret", "voip.py"),
    case("extra-turn-password", "synapse:extraConfig:\n  turn_password: t",
         "synapse:extraConfig.turn_password", "voip.py"),
    case("extra-pepper", "synapse:extraConfig:\n  password_config: {enabled: true, pepper: p}",
         "synapse:extraConfig.password_config.pepper", "auth.py"),
    case("extra-mas-secret", "synapse:extraConfig:\n  matrix_authentication_service: "
         "{enabled: true, secret: s}", "synapse:extraConfig.matrix_authentication_service.secret",
         "mas.py"),
    case("extra-msc3861-token", "synapse:extraConfig:\n  experimental_features:\n"
         "    msc3861: {admin_token: t}",
         "synapse:extraConfig.experimental_features.msc3861.admin_token", "MSC3861"),
    case("extra-ldap-bind-password", "synapse:extraConfig:\n  password_providers:\n"
         "    - module: ldap_auth_provider.LdapAuthProvider\n"
         "      config: {uri: 'ldap://x', bind_dn: cn=x, bind_password: p}",
         "synapse:extraConfig.password_providers[0].config.bind_password", "named like a secret"),
    case("extra-s3-secret-key", "synapse:extraConfig:\n  media_storage_providers:\n"
         "    - module: s3_storage_provider.S3StorageProviderBackend\n"
         "      config: {bucket: b, access_key_id: id, secret_access_key: k}",
         "synapse:extraConfig.media_storage_providers[0].config.secret_access_key",
         "named like a secret"),
    case("extra-module-api-token", "synapse:extraConfig:\n  modules:\n"
         "    - module: m.M\n      config: {nested: {api_token: t}}",
         "synapse:extraConfig.modules[0].config.nested.api_token", "named like a secret"),
    case("federation-not-object", "synapse:federation: open", "synapse:federation", "an object"),
    case("federation-unknown-key", "synapse:federation:\n  whitelist: []",
         "synapse:federation.whitelist", "unknown key"),
    case("federation-ca-not-list", f"synapse:federation:\n  customCaCertificates: {q(LEAF)}",
         "synapse:federation.customCaCertificates", "a list of PEM CA certificates"),
    case("federation-ca-not-pem", "synapse:federation:\n  customCaCertificates: [my-ca]",
         "synapse:federation.customCaCertificates[0]", "holds no PEM certificate"),
    case("federation-ca-is-a-key", f"synapse:federation:\n  customCaCertificates: [{q(A_KEY)}]",
         "synapse:federation.customCaCertificates[0]", "holds a PRIVATE KEY block"),
    case("federation-ca-broken", "synapse:federation:\n  customCaCertificates: "
         "['-----BEGIN CERTIFICATE-----\n  AAAA\n  -----END CERTIFICATE-----']",
         "synapse:federation.customCaCertificates[0]", "not a readable PEM certificate"),
    case("federation-ca-is-a-leaf", f"synapse:federation:\n  customCaCertificates: [{q(LEAF)}]",
         "synapse:federation.customCaCertificates[0]", "is not a CA certificate"),
    case("federation-ca-expired", "synapse:federation:\n  customCaCertificates: "
         f"[{q(self_signed())}, {q(EXPIRED_CA)}]",
         "synapse:federation.customCaCertificates[1]", "expired on"),
    case("federation-ip-range-not-cidr", "synapse:federation:\n  ipRangeWhitelist: [10.1.2.0/40]",
         "synapse:federation.ipRangeWhitelist[0]", "CIDR"),
    case("federation-ip-range-not-list", "synapse:federation:\n  ipRangeWhitelist: 10.0.0.0/8",
         "synapse:federation.ipRangeWhitelist", "a list of networks"),
    case("federation-domain-bad", "synapse:federation:\n  domainWhitelist: [matrix.org, 'a b']",
         "synapse:federation.domainWhitelist[1]", "a DNS name"),
    case("federation-domain-port", "synapse:federation:\n  domainWhitelist: ['c.test:99999']",
         "synapse:federation.domainWhitelist[0]", "a DNS name"),
    case("federation-tls-version-float", "synapse:federation:\n  minimumTlsVersion: 1.2",
         "synapse:federation.minimumTlsVersion", "(quoted), got 1.2"),
    case("federation-tls-version-unknown", "synapse:federation:\n  minimumTlsVersion: '1.4'",
         "synapse:federation.minimumTlsVersion", "must be one of"),
    case("federation-public-rooms-text", "synapse:federation:\n  allowPublicRooms: 'no'",
         "synapse:federation.allowPublicRooms", "true or false"),
    case("federation-extra-config", "synapse:extraConfig:\n  ip_range_whitelist: [10.0.0.0/8]",
         "synapse:extraConfig.ip_range_whitelist", "use the dedicated stack setting"),
    case("postgres-not-object", "synapse:postgres: fast", "synapse:postgres", "an object"),
    case("postgres-unknown-key", "synapse:postgres:\n  tuning: {}", "synapse:postgres.tuning",
         "unknown key"),
    case("postgres-unknown-setting", "synapse:postgres:\n  settings:\n    shared_buffer: 1GB",
         "synapse:postgres.settings.shared_buffer", "not a Postgres 15 setting"),
    case("postgres-managed-setting", "synapse:postgres:\n  settings:\n    listen_addresses: '*'",
         "synapse:postgres.settings.listen_addresses", "set by this program"),
    case("postgres-bad-unit", "synapse:postgres:\n  settings:\n    work_mem: 10XB",
         "synapse:postgres.settings.work_mem", "unit 'XB'"),
    case("postgres-out-of-range", "synapse:postgres:\n  settings:\n    checkpoint_timeout: 10s",
         "synapse:postgres.settings.checkpoint_timeout", "between 30 and 86400"),
    case("postgres-too-few-connections", "synapse:preset: large\nsynapse:postgres:\n  settings:\n"
         "    max_connections: 100", "synapse:postgres.settings.max_connections",
         "Postgres allows 100"),
    case("log-level", "synapse:log:\n  level: LOUD", "synapse:log.level", "must be one of"),
    case("cpus-unstable", "synapse:sizes:\n  small:\n    cpus: 0.01\n    memoryMb: 512",
         "synapse:sizes.small.cpus", "cannot be kept stable"),
    case("container-size-unknown", "synapse:containerSizes:\n  rooms: huge",
         "synapse:containerSizes.rooms", "unknown size"),
    case("extra-config-enforced", "synapse:extraConfig:\n  database: {}",
         "synapse:extraConfig.database", "managed by this program"),
    case("extra-config-list", "synapse:extraConfig: [1]", "synapse:extraConfig",
         "must be an object"),
    case("secret-config-enforced", "synapse:secretConfig:\n  listeners: []",
         "synapse:secretConfig.listeners", "managed by this program"),
    case("secret-config-overlaps-extra", "synapse:extraConfig:\n  email: {}\n"
         "synapse:secretConfig:\n  email:\n    smtp_pass:\n      secure: fake:x",
         "synapse:secretConfig.email", "also set in synapse:extraConfig"),
    case("name-prefix", "synapse:namePrefix: Bad Prefix", "synapse:namePrefix", "lowercase"),
    case("trusted-key-server", "synapse:trustedKeyServers: [matrix.org, no way]",
         "synapse:trustedKeyServers[1]", "server name"),
]


def write(tmp_path: Path, text: str, name: str = "Pulumi.bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_table_is_large_enough():
    assert len(BAD) >= 60
    assert len({p.id for p in BAD}) == len(BAD)


@pytest.mark.parametrize("text, key, reason, pulumi_loads", BAD)
def test_bad_config_is_refused_alike_everywhere(tmp_path, capsys, text, key, reason,
                                                pulumi_loads):
    path = write(tmp_path, text)

    # The shared reader, as the render command and the impact report call it.
    with pytest.raises(ConfigError) as err:
        read_stack_file(path)
    message = str(err.value)
    assert err.value.key == key
    assert reason in err.value.reason
    assert message == f"Error in configuration at '{key}': {err.value.reason}"
    assert "\n" not in message

    # The render command: exit 2, one line naming the file and the key, nothing written.
    out = tmp_path / "out"
    assert render.main(["--config", str(path), "--out", str(out)]) == 2
    streams = capsys.readouterr()
    assert streams.err == f"{path}: {message}\n" and streams.out == ""
    assert not out.exists()

    # The impact report, with the bad file as the new config and as the deployed one.
    assert impact.main(["--config", str(path), "--against", str(DEV)]) == 2
    assert capsys.readouterr() == ("", f"{path}: {message}\n")
    assert impact.main(["--config", str(DEV), "--against", str(path)]) == 2
    assert capsys.readouterr() == ("", f"{path}: {message}\n")

    # The program, given what the Pulumi CLI would hand it.
    if not pulumi_loads:
        # The CLI refuses the file itself (yaml.v3, config.ParseKey): no program runs.
        with pytest.raises(ConfigError) as cli:
            stack_file_pairs(path, decrypt=fake_decrypt)
        assert str(cli.value) == message
        return
    stack, pairs, secret_keys = stack_file_pairs(path, decrypt=fake_decrypt)
    assert not any(isinstance(v, Encrypted) for v in pairs.values())
    monitor = install_pairs(pairs, stack, secret_keys)
    with pytest.raises(pulumi.RunError) as run:
        program.main()
    assert str(run.value) == message
    assert [r.type for r in monitor.registered if r.type != "pulumi:pulumi:Stack"] == []


def test_an_unreadable_stack_file_is_one_line_too(tmp_path, capsys):
    path = write(tmp_path, "config:\n  synapse:serverName: [unclosed\n")
    assert render.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: cannot read stack file: ") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# --- tricky good configs -----------------------------------------------------------

GOOD = [
    # `pulumi config set synapse:maxUploadSizeMb 100` writes a string; `--type int` a
    # number; both reach the program as "100".
    pytest.param('synapse:maxUploadSizeMb: "100"', {"synapse:maxUploadSizeMb": "100"},
                 lambda s: s.max_upload_size_mb == 100, id="top-level-number-as-string"),
    pytest.param("synapse:maxUploadSizeMb: 100.0", {"synapse:maxUploadSizeMb": "100"},
                 lambda s: s.max_upload_size_mb == 100, id="top-level-integral-float"),
    # yaml.v3 reads 1e3 as a float; Pulumi passes 1000.0 as JSON "1000".
    pytest.param("synapse:maxUploadSizeMb: 1e3", {"synapse:maxUploadSizeMb": "1000"},
                 lambda s: s.max_upload_size_mb == 1000, id="top-level-1e3"),
    pytest.param('synapse:egress: "false"\nsynapse:reportStats: true',
                 {"synapse:egress": "false", "synapse:reportStats": "true"},
                 lambda s: s.egress is False and s.report_stats is True, id="bools-as-text"),
    # `pulumi config set --path synapse:workers.rooms 8` writes a typed nested int.
    pytest.param("synapse:preset: specialized\nsynapse:workers:\n  rooms: 8\n  sender: 0x3",
                 {"synapse:workers": '{"rooms":8,"sender":3}'},
                 lambda s: s.workers["rooms"] == 8 and s.workers["sender"] == 3,
                 id="path-typed-nested-ints"),
    pytest.param("synapse:sizes:\n  small:\n    cpus: 1\n    memoryMb: 1024.0",
                 {"synapse:sizes": '{"small":{"cpus":1,"memoryMb":1024}}'},
                 lambda s: s.sizes["small"].memory_mb == 1024, id="nested-integral-float"),
    pytest.param("docker:host: unix:///var/run/docker.sock\naws:region: eu-west-1",
                 {"docker:host": "unix:///var/run/docker.sock"},
                 lambda s: s.server_name == "example.org", id="other-namespaces"),
    # Pulumi puts a key without a namespace into the project's (loaders.go).
    pytest.param("maxUploadSizeMb: 75\nsynapse:config:egress: false",
                 {"synapse:maxUploadSizeMb": "75", "synapse:egress": "false"},
                 lambda s: s.max_upload_size_mb == 75 and s.egress is False,
                 id="bare-and-legacy-config-keys"),
    pytest.param(f"synapse:images:\n  synapse: registry.example.com:5000/team/synapse:v1.130.0@{DIGEST}\n"
                 f"  postgres: postgres@{DIGEST}\n  redis: '[::1]:5000/redis:latest'\n"
                 "  nginx: MyRegistry/nginx",
                 {},
                 lambda s: s.images.synapse.endswith(DIGEST) and s.images.nginx == "MyRegistry/nginx",
                 id="images-registry-port-digest-ipv6-registry"),
    pytest.param("synapse:images:\n  synapse: matrixdotorg/synapse:latest", {},
                 lambda s: s.images.synapse.endswith(":latest"), id="synapse-latest"),
    pytest.param("synapse:images:\n  synapse: matrixdotorg/synapse:v1.126.0rc1", {},
                 lambda s: s.images.synapse.endswith("rc1"), id="synapse-minimum-rc"),
    pytest.param("synapse:nginx:\n  bindAddress: '::'\n  clientPort: 18008\n"
                 "  adminAllow: ['::1/128', 10.0.0.0/8]",
                 {"synapse:nginx": '{"adminAllow":["::1/128","10.0.0.0/8"],"bindAddress":"::",'
                                   '"clientPort":18008}'},
                 lambda s: s.nginx.bind_address == "::" and s.nginx.client_port == 18008,
                 id="ipv6-bind-address"),
    pytest.param("synapse:publicBaseUrl: http://[::1]:8008/matrix", {},
                 lambda s: s.public_base_url == "http://[::1]:8008/matrix/", id="ipv6-url-with-path"),
    pytest.param(f"synapse:signingKey: {GOOD_KEY}\nsynapse:postgresPassword:\n"
                 "  secure: fake:a-password-of-some-length\nsynapse:secretConfig:\n"
                 "  turn_shared_secret:\n    secure: fake:turn-secret",
                 {"synapse:signingKey": GOOD_KEY,
                  "synapse:postgresPassword": "a-password-of-some-length",
                  "synapse:secretConfig": '{"turn_shared_secret":"turn-secret"}'},
                 lambda s: s.secret_config_keys == ("turn_shared_secret",),
                 id="secrets-plain-and-secure"),
    pytest.param("synapse:extraConfig:\n  enable_registration: yes\n  caches:\n"
                 "    global_factor: 1.5\n  <<: {presence: {enabled: false}}",
                 {"synapse:extraConfig": '{"caches":{"global_factor":1.5},'
                                         '"enable_registration":"yes","presence":{"enabled":false}}'},
                 lambda s: s.extra_config["enable_registration"] == "yes"
                 and s.extra_config["presence"] == {"enabled": False},
                 id="extra-config-yaml-1.2-and-merge"),
]


@pytest.mark.parametrize("body, pulumi_form, check", GOOD)
def test_tricky_good_config_is_accepted_alike_everywhere(tmp_path, capsys, body, pulumi_form,
                                                         check):
    path = write(tmp_path, stack_text(body), "Pulumi.good.yaml")
    shared = read_stack_file(path)
    assert check(shared.settings)

    # What the Pulumi CLI hands the program, as its source says (stack_config docstring).
    stack, pairs, secret_keys = stack_file_pairs(path, decrypt=fake_decrypt)
    for key, text in pulumi_form.items():
        assert pairs[key] == text, key

    out = tmp_path / "out"
    assert render.main(["--config", str(path), "--out", str(out)]) == 0
    assert (out / "manifest.json").is_file()
    assert impact.main(["--config", str(path), "--against", str(DEV)]) == 0
    capsys.readouterr()

    # The program reads the same settings and registers the stack.
    install_pairs(pairs, stack, secret_keys)
    assert program.read_config().settings == shared.settings
    cap = _run(install_pairs(pairs, stack, secret_keys), stack)
    # postgres, redis, live-config, nginx-config, nginx (+ Prometheus)
    services = 6 if shared.settings.metrics.enabled else 5
    assert len(cap.containers) == len(shared.plan.processes) + services


def test_the_program_gets_the_decrypted_secrets_the_file_names(tmp_path):
    body = ("synapse:postgresPassword:\n  secure: fake:a-password-of-some-length\n"
            "synapse:secretConfig:\n  turn_shared_secret:\n    secure: fake:turn-secret")
    path = write(tmp_path, stack_text(body), "Pulumi.good.yaml")
    rendered = read_stack_file(path)
    assert rendered.secrets["postgresPassword"] == Encrypted("fake:a-password-of-some-length")
    stack, pairs, secret_keys = stack_file_pairs(path, decrypt=fake_decrypt)
    assert secret_keys == {"synapse:postgresPassword", "synapse:secretConfig"}
    install_pairs(pairs, stack, secret_keys)
    config = program.read_config()
    assert config.secrets["postgresPassword"] == "a-password-of-some-length"
    assert config.secret_config == {"turn_shared_secret": "turn-secret"}


def test_a_secure_secret_is_checked_by_the_program_only(tmp_path):
    """The render command cannot decrypt, so a `secure:` secret of a bad shape is
    the one refusal only the program makes."""
    path = write(tmp_path, stack_text("synapse:formSecret:\n  secure: fake:short"))
    read_stack_file(path)  # accepted: only the ciphertext is known
    stack, pairs, secret_keys = stack_file_pairs(path, decrypt=fake_decrypt)
    install_pairs(pairs, stack, secret_keys)
    with pytest.raises(pulumi.RunError, match="synapse:formSecret': must be at least 16"):
        program.main()


@pytest.mark.parametrize("pairs, expected", [
    # Hand-written as the Pulumi CLI passes them (value.go, object.go): all text.
    ({"synapse:serverName": "example.org", "synapse:maxUploadSizeMb": "100",
      "synapse:workers": '{"rooms":8}', "synapse:egress": "false"},
     {"max_upload_size_mb": 100, "egress": False}),
    ({"synapse:serverName": "1234", "synapse:namePrefix": "007"},
     {"server_name": "1234", "name_prefix": "007"}),
])
def test_the_program_reads_pulumi_text(pairs, expected):
    install_pairs(pairs, "t")
    settings = program.read_config().settings
    for name, value in expected.items():
        assert getattr(settings, name) == value


def test_set_values_are_typed_as_in_a_stack_file(tmp_path):
    """--set takes YAML as Pulumi reads a stack file: `yes` is text, `0x10` 16."""
    path = write(tmp_path, stack_text(""), "Pulumi.good.yaml")
    assert override_arg("egress=yes") == ("egress", "yes")
    with pytest.raises(ConfigError, match="synapse:egress': must be true or false, got str 'yes'"):
        read_stack_file(path, dict([override_arg("egress=yes")]))
    rooms = dict([override_arg("workers.rooms=0x10")])
    assert rooms == {"workers.rooms": 16}
    assert read_stack_file(path, rooms).settings.workers["rooms"] == 16


def test_an_encrypted_value_counts_as_secret_even_if_not_listed():
    from components.plan.stack_config import read_stack
    with pytest.raises(ConfigError, match="synapse:serverName': is a secret"):
        read_stack({"synapse:serverName": Encrypted("v1:abc")}, (), "t")
