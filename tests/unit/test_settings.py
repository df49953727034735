"""Stack config -> Settings: defaults, and one clear error per kind of mistake."""

import pytest

from components.plan.errors import ConfigError
from components.plan.settings import (
    DEFAULT_IMAGES,
    check_secret_overrides,
    load_settings,
)
from components.plan.stack_config import from_pulumi
from components.plan.topology import build_plan
from components.plan.workers import CLASS_NAMES, PRESETS

BASE = {"serverName": "example.org"}


def load(**raw):
    return load_settings({**BASE, **raw}, stack="t")


def test_defaults_follow_the_server_name():
    s = load()
    assert s.public_base_url == "https://example.org/"
    assert s.name_prefix == "synapse-t"
    assert dict(s.workers) == {name: 1 for name in CLASS_NAMES}
    assert s.images.synapse == DEFAULT_IMAGES["synapse"]
    assert s.nginx.bind_address == "127.0.0.1" and s.nginx.client_port == 8008


def test_a_preset_gives_the_counts_and_synapse_workers_overrides_them():
    s = load(preset="specialized", workers={"rooms": 8})
    assert s.preset == "specialized"
    assert dict(s.workers) == {"client_sync": 1, "federation_reader": 1, "media": 1,
                               "rooms": 8, "sender": 4, "tasks": 1}
    assert set(load(preset="monolith").workers.values()) == {0}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_is_a_valid_plan_within_synapse_rules(preset):
    plan = build_plan(load(preset=preset))  # check_plan re-states Synapse's rules
    assert len(plan.processes) == 1 + sum(PRESETS[preset].values())


def test_large_spreads_single_writer_streams_and_shards_events():
    plan = build_plan(load(preset="large"))
    single = [plan.stream_writers[s] for s in ("typing", "to_device", "account_data", "presence")]
    assert len({w for ws in single for w in ws}) == 4
    assert len(plan.stream_writers["events"]) > 1 and len(plan.duties["federation_sender_instances"]) > 4


def test_synapse_image_is_new_enough_for_socket_replication():
    tag = DEFAULT_IMAGES["synapse"].rsplit(":v", 1)[1]
    assert tuple(int(x) for x in tag.split(".")[:2]) >= (1, 89)


def test_public_base_url_gets_a_trailing_slash():
    assert load(publicBaseUrl="https://matrix.example.org").public_base_url == (
        "https://matrix.example.org/"
    )


@pytest.mark.parametrize(
    "raw, key, reason",
    [
        ({"serverName": None}, "synapse:serverName", "is required"),
        ({"serverName": "bad name!"}, "synapse:serverName", "DNS name"),
        ({"serverName": "example.org:99999"}, "synapse:serverName", "DNS name"),
        ({"publicBaseUrl": "ftp://x"}, "synapse:publicBaseUrl", "http(s) URL"),
        ({"wokers": {}}, "synapse:wokers", "unknown key"),
        ({"workers": {"room": 2}}, "synapse:workers.room", "unknown key"),
        ({"workers": {"rooms": -1}}, "synapse:workers.rooms", "between 0 and 64"),
        ({"workers": {"rooms": "4"}}, "synapse:workers.rooms", "must be an integer"),
        ({"workers": {"sender": True}}, "synapse:workers.sender", "must be an integer"),
        ({"workers": [1, 2]}, "synapse:workers", "must be an object"),
        ({"preset": "huge"}, "synapse:preset", "must be one of monolith, one-of-each"),
        ({"preset": ["large"]}, "synapse:preset", "must be one of"),
        ({"images": {"synapse": ""}}, "synapse:images.synapse", "image reference"),
        ({"images": {"matrix": "x"}}, "synapse:images.matrix", "unknown key"),
        ({"nginx": {"bindAddress": "localhost"}}, "synapse:nginx.bindAddress", "IP address"),
        ({"nginx": {"clientPort": 0}}, "synapse:nginx.clientPort", "between 1 and 65535"),
        ({"nginx": {"federationPort": 8008}}, "synapse:nginx.federationPort", "already nginx.clientPort"),
        ({"nginx": {"adminPort": 8448}}, "synapse:nginx.adminPort", "already nginx.federationPort"),
        ({"nginx": {"tls": True}, "publicBaseUrl": "http://m.example.org/"}, "synapse:nginx.tls",
         "needs an https publicBaseUrl"),
        ({"nginx": {"tls": "yes"}}, "synapse:nginx.tls", "true, false or acme"),
        ({"nginx": {"adminBindAddress": "localhost"}}, "synapse:nginx.adminBindAddress",
         "IP address"),
        ({"nginx": {"adminAllow": ["10.0.0.0/33"]}}, "synapse:nginx.adminAllow[0]", "CIDR"),
        ({"log": {"level": "LOUD"}}, "synapse:log.level", "one of"),
        ({"log": {"daysKept": 0}}, "synapse:log.daysKept", "between 1"),
        ({"sizes": {"small": {"cpus": 0, "memoryMb": 512}}}, "synapse:sizes.small.cpus", "between 0"),
        ({"sizes": {"tiny": {"cpus": 1}}}, "synapse:sizes.tiny.memoryMb", "must be an integer"),
        ({"containerSizes": {"rooms": "huge"}}, "synapse:containerSizes.rooms", "unknown size"),
        ({"extraConfig": {"instance_map": {}}}, "synapse:extraConfig.instance_map", "managed"),
        ({"extraConfig": {"database": {}}}, "synapse:extraConfig.database", "managed"),
        ({"extraConfig": {"federation_sender_instances": []}},
         "synapse:extraConfig.federation_sender_instances", "managed"),
        ({"egress": "yes"}, "synapse:egress", "true or false"),
        ({"trustedKeyServers": ["matrix.org", "no way"]}, "synapse:trustedKeyServers[1]", "server name"),
        ({"namePrefix": "Bad Prefix"}, "synapse:namePrefix", "lowercase"),
    ],
)
def test_bad_config_names_the_key_and_the_reason(raw, key, reason):
    with pytest.raises(ConfigError) as err:
        load(**raw)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(err.value).startswith(f"Error in configuration at '{key}': ")


def test_extra_config_may_override_defaults():
    s = load(extraConfig={"presence": {"enabled": False}, "enable_registration": True})
    assert s.extra_config["presence"] == {"enabled": False}


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("macaroonSecretKey", "short", "at least 16"),
        ("signingKey", "ed25519 a_x notbase64", "ed25519 a_<id>"),
        ("postgresPassword", 1234, "must be a string"),
    ],
)
def test_bad_secret_override_never_echoes_the_value(key, value, reason):
    with pytest.raises(ConfigError) as err:
        check_secret_overrides({key: value})
    assert err.value.key == f"synapse:{key}" and reason in err.value.reason
    assert str(value) not in str(err.value).replace(err.value.reason, "")


def test_good_signing_key_override_is_accepted():
    check_secret_overrides({"signingKey": "ed25519 a_abc " + "A" * 43, "formSecret": "x" * 16})


def test_pulumi_values_are_json_decoded_except_string_keys():
    raw = from_pulumi({
        "synapse:serverName": "1234",
        "synapse:workers": '{"rooms": 4}',
        "synapse:egress": "false",
        "synapse:maxUploadSizeMb": "100",
        "aws:region": "ignored",
    })
    assert raw == {"serverName": "1234", "workers": {"rooms": 4}, "egress": False,
                   "maxUploadSizeMb": 100}


# --- synapse:streamWriters -----------------------------------------------------------


def test_stream_writers_take_a_name_or_a_list_and_replace_the_defaults():
    s = load(streamWriters={"typing": "rooms1", "receipts": ["client_sync1", "rooms1"]})
    assert dict(s.stream_writers) == {"typing": ("rooms1",), "receipts": ("client_sync1", "rooms1")}
    plan = build_plan(s)
    assert plan.stream_writers["typing"] == ("rooms1",)
    assert plan.stream_writers["receipts"] == ("client_sync1", "rooms1")
    # A writer needs replication, so it joins instance_map; the table's others stay.
    assert "rooms1" in plan.instance_map
    assert plan.stream_writers["to_device"] == ("client_sync1",)


def test_stream_writers_may_name_main():
    plan = build_plan(load(streamWriters={"events": ["main", "tasks1"], "typing": "main"}))
    assert plan.stream_writers["events"] == ("main", "tasks1")
    assert plan.stream_writers["typing"] == ("main",)


@pytest.mark.parametrize("raw, key, reason", [
    ({"stream": ["main"]}, "synapse:streamWriters.stream", "unknown key"),
    ({"events": []}, "synapse:streamWriters.events", "at least one writer"),
    ({"device_lists": 3}, "synapse:streamWriters.device_lists", "process name"),
    ({"typing": ["client_sync1", "rooms1"]}, "synapse:streamWriters.typing", "exactly one writer"),
    ({"to_device": ["main", "rooms1"]}, "synapse:streamWriters.to_device", "exactly one writer"),
    ({"account_data": ["main", "rooms1"]}, "synapse:streamWriters.account_data", "exactly one"),
    ({"presence": ["main", "rooms1"]}, "synapse:streamWriters.presence", "exactly one writer"),
    ({"push_rules": ["main", "rooms1"]}, "synapse:streamWriters.push_rules", "exactly one writer"),
    ({"events": ["tasks1", "tasks9"]}, "synapse:streamWriters.events[1]", "no process 'tasks9'"),
    ({"receipts": ["rooms1", "rooms1"]}, "synapse:streamWriters.receipts[1]", "listed twice"),
    ({"receipts": [""]}, "synapse:streamWriters.receipts[0]", "non-empty string"),
    ({"device_lists": ["sender1"]}, "synapse:streamWriters.device_lists[0]", "client API"),
    ({"typing": "tasks1"}, "synapse:streamWriters.typing[0]", "client API"),
    ({"thread_subscriptions": ["federation_reader1"]},
     "synapse:streamWriters.thread_subscriptions[0]", "client API"),
    ({"quarantined_media_changes": ["media1"]},
     "synapse:streamWriters.quarantined_media_changes", "must include main"),
    ({"quarantined_media_changes": ["main"]},
     "synapse:streamWriters.quarantined_media_changes", "must include media1"),
])
def test_stream_writers_refusals_name_the_key(raw, key, reason):
    with pytest.raises(ConfigError) as err:
        load(streamWriters=raw)
    assert err.value.key == key and reason in err.value.reason, str(err.value)


def test_stream_writers_follow_the_worker_counts():
    # client_sync2 exists only when synapse:workers says so.
    with pytest.raises(ConfigError, match="no process 'client_sync2'"):
        load(streamWriters={"receipts": ["client_sync2"]})
    s = load(workers={"client_sync": 2}, streamWriters={"receipts": ["client_sync2"]})
    assert s.stream_writers["receipts"] == ("client_sync2",)
    # Without media workers main alone may write quarantined_media_changes.
    load(workers={"media": 0}, streamWriters={"quarantined_media_changes": "main"})


def test_stream_writers_is_a_known_top_level_key():
    with pytest.raises(ConfigError, match="synapse:streamWriters"):
        load(streamWriters=["events"])


def test_stream_writers_arrive_from_pulumi_as_json():
    raw = from_pulumi({"synapse:serverName": "example.org",
                       "synapse:streamWriters": '{"receipts": ["client_sync1", "main"]}'})
    assert load_settings(raw, "t").stream_writers["receipts"] == ("client_sync1", "main")


def test_a_preset_that_does_not_name_a_class_gives_it_no_process(monkeypatch):
    """Adding a class to the table leaves every preset complete: the impact report,
    which reads every class's count, works on it."""
    from components.tools import impact
    from components.plan import settings as st
    from components.plan.topology import build_plan
    from components.plan.workers import CLASS_NAMES

    monkeypatch.setattr(st, "PRESETS", {**st.PRESETS, "partial": {"rooms": 2}})
    s = st.load_settings({"serverName": "example.org", "preset": "partial"}, "t")
    assert dict(s.workers) == {**dict.fromkeys(CLASS_NAMES, 0), "rooms": 2}
    one = st.load_settings({"serverName": "example.org"}, "t")
    warnings = impact.warnings_for(build_plan(one), build_plan(s), [])
    assert any("goes 1 -> 0" in w for w in warnings), warnings
