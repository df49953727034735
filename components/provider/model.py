"""What the pulumi-docker provider does with each input this program sets: the
form it reads the value back in (what Pulumi's state then holds), and whether a
change updates the object in place or replaces it. No Pulumi import.

pulumi-docker is bridged from kreuzwerker/terraform-provider-docker. The rows were
read in kreuzwerker v4.5.0, the upstream of pulumi-docker 5.1.0, which is the
release requirements.txt pins (tests/unit/test_provider_model.py ties the two).
5.2.0 bridges a later upstream (its SDK has upload owner/group and
device_cgroup_rules, kreuzwerker 4.6.0's release PR #998) whose source has not
been read here, so it is not pinned (../shared/notes/provider-facts.md).

Sources, abbreviated in the table:
  K/container  kreuzwerker internal/provider/resource_docker_container.go (schema)
  K/read       kreuzwerker internal/provider/resource_docker_container_funcs.go
               (resourceDockerContainerRead, ...Create, ...Update, ...Delete)
  K/helpers    kreuzwerker internal/provider/helpers.go (nanoInt64ToDecimalString)
  K/structures kreuzwerker internal/provider/resource_docker_container_structures.go (flatten*)
  K/volume     kreuzwerker internal/provider/resource_docker_volume.go
  K/network    kreuzwerker internal/provider/resource_docker_network.go (+ _funcs.go)
  K/image      kreuzwerker internal/provider/resource_docker_image.go (+ _funcs.go;
               Terraform's docker_image, Pulumi's RemoteImage)
  K/service    kreuzwerker internal/provider/resource_docker_service.go (schema),
               _funcs.go (create, read, update, delete; converge_config's wait) and
               _structures.go (flatten*: what a read stores); helpers.go shortDur
  K/config     kreuzwerker internal/provider/resource_docker_config.go
  K/secret     kreuzwerker internal/provider/resource_docker_secret.go
               (the Swarm rows were written from what earlier sessions read of these
               files; they were not fetched again when written, and the replay's
               read-back on a real swarm is what holds them: tests/e2e/swarm/)
  M/container  moby daemon/container.go (validateCapabilities: names checked, kept as sent)
  M/archive    moby daemon/archive*.go (containerExtractToDir: refuses a read-only rootfs)
  P/resources  pulumi/pulumi-docker provider/resources.go
  B/diff       pulumi/pulumi-terraform-bridge pkg/tfbridge/provider.go (Diff)

Why it matters: Pulumi diffs the program's inputs against what the provider read
back after the last create or refresh. An input not already in that normal form
(`cpus: "1"` is stored as "1.0", a `start_period` of "60s" as "1m0s") differs on
every preview, and `cpus` forces replacement: every `up` would replace every
container. So the program emits every input in its normal form, and
tests/unit/test_provider_model.py holds every registered input against this table.
"""

from __future__ import annotations

# The pulumi-docker release requirements.txt pins, and the upstream its rows were
# read in (tests/unit/test_provider_model.py ties the pin to this).
PINNED_PULUMI_DOCKER = "5.1.0"
ROWS_READ_IN = "kreuzwerker/terraform-provider-docker v4.5.0 (pulumi-docker 5.1.0's upstream)"

import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
SERVICE = "docker:index/service:Service"
SERVICE_CONFIG = "docker:index/serviceConfig:ServiceConfig"
SECRET = "docker:index/secret:Secret"

REPLACE = "replace"  # ForceNew in the provider's schema
UPDATE = "update"  # changed in place (or only in state)

# How a value is compared: lists in order, sets and maps regardless of order.
SCALAR, LIST, SET, MAP, OBJECT = "scalar", "list", "set", "map", "object"

NANO = 10**9


# --- the provider's conversions -------------------------------------------------


def nano_cpus(text: str) -> int:
    """docker/cli opts.ParseCPUs, which the provider calls on `cpus`: a decimal
    number of CPUs -> NanoCPUs; more precise than a nanoCPU is an error."""
    nano = Fraction(text) * NANO
    if nano.denominator != 1:
        raise ValueError(f"cpus {text!r} is more precise than one nanoCPU")
    return nano.numerator


def _float_string(value: Fraction, prec: int) -> str:
    """Go's big.Rat.FloatString: `prec` decimals, rounded half away from zero."""
    scaled = abs(value) * 10**prec
    q, rem = divmod(scaled.numerator, scaled.denominator)
    if 2 * rem >= scaled.denominator:
        q += 1
    digits = str(q).rjust(prec + 1, "0")
    text = f"{digits[:-prec]}.{digits[-prec:]}" if prec else digits
    return ("-" if value < 0 else "") + text


def cpus_read_back(nano: int) -> str:
    """K/helpers nanoInt64ToDecimalString: NanoCPUs -> the `cpus` string in state.
    1e9 -> "1.0", 5e8 -> "0.5", 1.25e9 -> "1.25"; its quirks are kept (10e9 ->
    "10.", 1e6 -> "0.0"), so settings refuse sizes that are not fixed points."""
    if nano == 0:
        return "0"
    value = Fraction(nano, NANO)
    text = _float_string(value, 9)
    if text.count("0") == 9:
        return _float_string(value, 1)
    return text.rstrip("0")


def cpus(count: float) -> str:
    """The `cpus` input for a number of CPUs, in the form the provider reads back."""
    return cpus_read_back(nano_cpus(repr(float(count))))


def cpus_is_fixed_point(count: float) -> bool:
    """True when the read-back form means the same NanoCPUs: otherwise no input
    can ever match the state and every preview replaces the container."""
    nano = nano_cpus(repr(float(count)))
    try:
        return nano_cpus(cpus_read_back(nano)) == nano
    except (ValueError, ZeroDivisionError):
        return False


_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": NANO, "m": 60 * NANO,
             "h": 3600 * NANO}


def duration_ns(text: str) -> int:
    """Go's time.ParseDuration (the provider parses healthcheck durations with it)."""
    if text == "0":
        return 0
    total, pos = Fraction(0), 0
    for m in re.finditer(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += Fraction(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return int(total)


def _frac(v: int, prec: int) -> tuple[str, int]:
    digits, printed = [], False
    for _ in range(prec):
        d = v % 10
        printed = printed or d != 0
        if printed:
            digits.append(str(d))
        v //= 10
    return ("." + "".join(reversed(digits)) if printed else ""), v


def duration_read_back(ns: int) -> str:
    """Go's time.Duration.String(): how the provider stores healthcheck durations
    read back from Docker: 5e9 -> "5s", 60e9 -> "1m0s", 5e8 -> "500ms"."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < NANO:
        unit, prec = (("ns", 0) if u < 10**3 else ("µs", 3) if u < 10**6 else ("ms", 6))
        frac, whole = _frac(u, prec)
        return f"{sign}{whole}{frac}{unit}"
    frac, whole = _frac(u, 9)
    text = f"{whole % 60}{frac}s"
    whole //= 60
    if whole:
        text = f"{whole % 60}m{text}"
        whole //= 60
        if whole:
            text = f"{whole}h{text}"
    return sign + text


def duration(seconds: float) -> str:
    """A healthcheck duration input, in the form the provider reads back."""
    return duration_read_back(int(Fraction(str(seconds)) * NANO))


def short_duration_read_back(ns: int) -> str:
    """K/service's shortDur: Duration.String() without a trailing "0s" after minutes
    or "0m" after hours, how a service's durations are stored: 60 s -> "1m"."""
    text = duration_read_back(ns)
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def short_duration(seconds: float) -> str:
    """A service duration input, in the form the provider reads back."""
    return short_duration_read_back(int(Fraction(str(seconds)) * NANO))


# --- the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    """One input as the provider treats it."""

    change: str  # REPLACE or UPDATE
    read_back: str  # what state holds after create/refresh
    source: str
    kind: str = SCALAR
    # The normal form of a value, where it differs from "as given" (None: as given).
    normal: Callable[[Any], Any] | None = None
    read: bool = True  # read back from Docker; False: state keeps the input as sent
    default: Any = None  # the schema default when the input is unset
    # Computed in the schema: left unset, whatever state holds is no diff.
    computed: bool = False
    # Schema defaults of nested fields, filled in before comparing (as a plan does).
    fill: Callable[[Any], Any] | None = None
    # REPLACE only when this holds for (old, new); otherwise the change is an update.
    replace_if: Callable[[Any, Any], bool] | None = None
    # The schema's DiffSuppressFunc: (old, new) that the provider takes for no change.
    suppress: Callable[[Any, Any], bool] | None = None


# The lowest Docker API version that takes a healthcheck start_interval. The
# provider's Docker client (github.com/docker/docker v28.5.2, pulumi-docker's
# provider/go.mod; API version negotiated with the engine) refuses to send one to an
# older engine: moby client/container_create.go ContainerCreate returns
# NewVersionError(ctx, "1.44", "specify health-check start interval"), so the create
# fails ('"specify health-check start interval" requires API version 1.44, but the
# Docker daemon API version is 1.41' on Debian's docker.io 20.10). A daemon from 25.0
# honours it (moby daemon/health.go monitor: probes every start_interval while
# `starting` within start_period) and reads it back; below API 1.44 its own router
# would zero it (api/server/router/container/container_routes.go).
START_INTERVAL_API = (1, 44)

HEALTHCHECK_DURATIONS = ("interval", "timeout", "startPeriod", "startInterval")


def _healthcheck_defaults(hc: Mapping[str, Any]) -> dict[str, Any]:
    """The schema's defaults: every duration "0s", no retries."""
    return {"retries": 0, **{k: "0s" for k in HEALTHCHECK_DURATIONS}, **hc}


def _norm_healthcheck(hc: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, every duration in Go's form."""
    out = _healthcheck_defaults(hc)
    for k in HEALTHCHECK_DURATIONS:
        out[k] = duration_read_back(duration_ns(out[k]))
    return out


def _mount_defaults(mounts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"readOnly": False, **m} for m in mounts]


def _port_defaults(ports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"ip": "0.0.0.0", "protocol": "tcp", **p} for p in ports]


def _capability_sets(caps: Mapping[str, Any]) -> dict[str, Any]:
    """add and drop are sets: empty when unset, compared regardless of order."""
    return {k: sorted(caps.get(k) or []) for k in ("adds", "drops")}


C = "K/container"
R = "K/read"
CONTAINER_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "the name without Docker's leading '/'", f"{C}, {R}"),
    "image": Attr(REPLACE, "given a sha256: ID (RemoteImage.image_id), the container's image "
                  "ID; given a reference, Config.Image", f"{C}, {R}"),
    "entrypoints": Attr(REPLACE, "Config.Entrypoint verbatim (the image's when unset)",
                        f"{C}, {R}", LIST, computed=True),
    "command": Attr(REPLACE, "Config.Cmd verbatim (the image's when unset)", f"{C}, {R}", LIST,
                    computed=True),
    # "We decided not to set the environment variables and labels because they are
    # taken over from the Docker image" (K/read): state keeps them as sent.
    "envs": Attr(REPLACE, "not read back: state keeps them as sent", f"{C}, {R}", SET,
                 read=False, computed=True),
    "labels": Attr(REPLACE, "not read back: state keeps them as sent", f"{C}, {R}", SET,
                   read=False, computed=True),
    # No owner/group in v4.5.0: the tar header carries uid/gid 0, so every upload
    # is root's with its `permissions` (File.non_root_reader).
    "uploads": Attr(REPLACE, "not read back; written once between create and start ('The "
                    "container is mutated once, and never updated later'): a changed file "
                    "replaces the container", f"{C}, {R} (create)", SET, read=False),
    # ForceNew sits on the set's size (`mounts.#`) only: a mount whose source, target
    # or read-only flag changes while the count stays is an in-place update that
    # resourceDockerContainerUpdate has no code for (the container keeps its old
    # mounts). The program adds replace_on_changes, as for healthcheck.
    "mounts": Attr(REPLACE, "HostConfig.Mounts as submitted: target, source, type and "
                   "read_only (false when unset)", f"{C}, {R} getDockerContainerMounts", SET,
                   normal=_mount_defaults, fill=_mount_defaults,
                   replace_if=lambda old, new: len(old or []) != len(new or [])),
    # Read back only when the set is empty, which GetOk never reports: never read.
    "networksAdvanced": Attr(REPLACE, "not read back (the read is guarded by a GetOk that "
                             "never lets it run): state keeps them as sent", f"{C}, {R}", SET,
                             read=False),
    # Compared by internal port whatever the order (suppressIfPortsDidNotChange...).
    "ports": Attr(REPLACE, "NetworkSettings.Ports, ordered by internal port: internal, "
                  "external, ip (verbatim), protocol", f"{C}, K/structures flattenContainerPorts",
                  SET, normal=lambda ps: sorted(_port_defaults(ps), key=lambda p: p["internal"]),
                  fill=_port_defaults),
    # Not ForceNew, and Update has no code for it: a changed healthcheck only changes
    # state. The program adds replace_on_changes and delete_before_replace.
    # start_interval goes to Config.Healthcheck.StartInterval (K/read create); see
    # START_INTERVAL_API for what an engine older than API 1.44 makes of it.
    "healthcheck": Attr(UPDATE, "Config.Healthcheck; durations as Go's Duration.String ('1m0s' "
                        "for 60 s), start_interval included ('0s' when unset)", f"{C}, {R}",
                        OBJECT, normal=_norm_healthcheck, computed=True,
                        fill=_healthcheck_defaults),
    # Least privilege (docs/least-privilege.md). All ForceNew but tmpfs.
    "user": Attr(REPLACE, "Config.User verbatim; '' (the image's user) when unset, which the "
                 "schema's DiffSuppressFunc takes for no change", f"{C}, {R}", default="",
                 # Removing `user` is no diff: the container keeps its old user.
                 suppress=lambda old, new: new in (None, "")),
    "groupAdds": Attr(REPLACE, "HostConfig.GroupAdd verbatim", f"{C}, {R}", SET),
    # Docker validates capability names but stores them as sent (M/container): "CHOWN"
    # stays "CHOWN"; the program sends Docker's CAP_ form.
    "capabilities": Attr(REPLACE, "HostConfig.CapAdd and CapDrop as sent, read only when "
                         "either is non-empty; add and drop are sets", f"{C}, {R}, M/container",
                         OBJECT, fill=_capability_sets),
    "securityOpts": Attr(REPLACE, "HostConfig.SecurityOpt verbatim ('systempaths=unconfined' "
                         "would be turned into masked/read-only paths at create)", f"{C}, {R}",
                         SET, computed=True),
    "readOnly": Attr(REPLACE, "HostConfig.ReadonlyRootfs. Docker then refuses the create's "
                     "uploads (extracted at '/', not on a volume): 'container rootfs is "
                     "marked read-only'", f"{C}, {R}, M/archive", default=False),
    # Not ForceNew, and Update has no code for it: a change only changes state. The
    # program adds replace_on_changes, as for healthcheck.
    "tmpfs": Attr(UPDATE, "HostConfig.Tmpfs verbatim (path -> mount options)", f"{C}, {R}", MAP),
    "restart": Attr(UPDATE, "HostConfig.RestartPolicy.Name; updated with ContainerUpdate",
                    f"{C}, {R} resourceDockerContainerUpdate", default="no"),
    "memory": Attr(UPDATE, "HostConfig.Memory / 1 MiB; updated with ContainerUpdate", f"{C}, {R}"),
    "memorySwap": Attr(UPDATE, "HostConfig.MemorySwap / 1 MiB when > 0, else as is; Docker "
                       "stores 2 x memory when it is not given (a diff on every preview), "
                       "and -1 on hosts without swap accounting", f"{C}, {R}, moby "
                       "daemon/daemon_unix.go adaptContainerSettings"),
    "cpus": Attr(REPLACE, "nanoInt64ToDecimalString(HostConfig.NanoCPUs): '1.0', '0.5', '10.'",
                 f"{C}, {R}, K/helpers", normal=lambda v: cpus_read_back(nano_cpus(v))),
    "logDriver": Attr(REPLACE, "HostConfig.LogConfig.Type (the daemon's default when unset)",
                      f"{C}, {R}", computed=True),
    "logOpts": Attr(REPLACE, "HostConfig.LogConfig.Config, read only when set (daemon "
                    "default log-opts for the same driver would show up as a diff)",
                    f"{C}, {R} containerLogOptsForState", MAP),
    "destroyGraceSeconds": Attr(UPDATE, "not read back; the stop timeout of a delete (0: kill)",
                                f"{C}, {R} resourceDockerContainerDelete", read=False),
    "wait": Attr(UPDATE, "not read back; create polls every second until healthy", f"{C}, {R}",
                 read=False, default=False),
    "waitTimeout": Attr(UPDATE, "not read back", f"{C}, {R}", read=False, default=60),
    "mustRun": Attr(UPDATE, "a read that finds the container stopped stores false; the "
                    "next up's update starts it again (ContainerStart), keeping its ID",
                    f"{C}, {R}", default=True),
}

# K/network has no update at all: every input it reads back forces a replacement.
NETWORK_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "the network name", "K/network"),
    "driver": Attr(REPLACE, "the driver", "K/network", default="bridge"),
    "internal": Attr(REPLACE, "Internal", "K/network", default=False),
    "attachable": Attr(REPLACE, "Attachable (overlay networks: whether a plain container may "
                       "join)", "K/network", default=False),
    # Docker adds its own options (an overlay's vxlanid_list): modelled as kept as
    # sent, which the bed could not hold (an encrypted overlay passes no traffic there).
    "options": Attr(REPLACE, "the driver options as sent (overlay: 'encrypted'); not "
                    "checked against a read on this machine", "K/network", MAP, read=False),
}


# --- Swarm ----------------------------------------------------------------------

def _service_durations(obj: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    out = dict(obj)
    for k in keys:
        if k in out and out[k] is not None:
            out[k] = short_duration_read_back(duration_ns(out[k]))
    return out


def _file_refs(refs: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """configs / secrets of a container spec: a set, by file name; owner "0" and
    mode 0444 when unset (the schema's defaults)."""
    return sorted(({"fileUid": "0", "fileGid": "0", "fileMode": 0o444, **r} for r in refs or []),
                  key=lambda r: r["fileName"])


def _norm_task_spec(ts: Mapping[str, Any]) -> dict[str, Any]:
    """What a read stores of a task spec (flattenTaskSpec): durations in shortDur
    form, the sets (configs, secrets, mounts, constraints, networks) in one order,
    the schema's defaults filled in."""
    out = dict(ts)
    cs = dict(out.get("containerSpec") or {})
    if "healthcheck" in cs:
        cs["healthcheck"] = _service_durations({"retries": 0, **cs["healthcheck"]},
                                               ("interval", "timeout", "startPeriod"))
    if "stopGracePeriod" in cs:
        cs["stopGracePeriod"] = short_duration_read_back(duration_ns(cs["stopGracePeriod"]))
    for key in ("configs", "secrets"):
        if cs.get(key):
            cs[key] = _file_refs(cs[key])
    if cs.get("mounts"):
        cs["mounts"] = sorted(({"readOnly": False, **m} for m in cs["mounts"]),
                              key=lambda m: m["target"])
    for key in ("capAdds", "capDrops"):
        if cs.get(key):
            cs[key] = sorted(cs[key])
    out["containerSpec"] = cs
    if out.get("placement", {}).get("constraints"):
        out["placement"] = {**out["placement"], "constraints": sorted(out["placement"]["constraints"])}
    if out.get("networksAdvanceds"):
        out["networksAdvanceds"] = sorted(out["networksAdvanceds"], key=lambda n: n["id"])
    if "restartPolicy" in out:
        out["restartPolicy"] = _service_durations(out["restartPolicy"], ("delay", "window"))
    return out


def _norm_update(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return _service_durations({"parallelism": 1, "delay": "0s", "failureAction": "pause",
                               "monitor": "5s", "maxFailureRatio": "0", "order": "stop-first",
                               **cfg}, ("delay", "monitor"))


def _norm_endpoint(spec: Mapping[str, Any]) -> dict[str, Any]:
    ports = sorted(({"protocol": "tcp", "publishMode": "ingress", **p}
                    for p in spec.get("ports") or []), key=lambda p: p["targetPort"])
    return {"mode": "vip", **spec, **({"ports": ports} if ports else {})}


SV, SF = "K/service", "K/service (_funcs.go, _structures.go)"
SERVICE_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "Spec.Name", f"{SV}, {SF}"),
    # Everything else is updated in place: ServiceUpdate with the whole new spec,
    # which Swarm rolls out by the service's update_config.
    "labels": Attr(UPDATE, "Spec.Labels, a set of label/value", f"{SV}, {SF}", SET),
    "taskSpec": Attr(UPDATE, "Spec.TaskTemplate flattened: durations in shortDur form "
                     "('1m' for 60 s), configs/secrets/mounts as sets", f"{SV}, {SF}", OBJECT,
                     normal=_norm_task_spec, fill=_norm_task_spec),
    "mode": Attr(UPDATE, "Spec.Mode: replicated.replicas", f"{SV}, {SF}", OBJECT,
                 computed=True),
    "updateConfig": Attr(UPDATE, "Spec.UpdateConfig; durations in shortDur form",
                         f"{SV}, {SF}", OBJECT, normal=_norm_update, fill=_norm_update),
    "rollbackConfig": Attr(UPDATE, "Spec.RollbackConfig; durations in shortDur form",
                           f"{SV}, {SF}", OBJECT, normal=_norm_update, fill=_norm_update),
    "endpointSpec": Attr(UPDATE, "Spec.EndpointSpec: mode and ports (publish mode, "
                         "protocol filled in)", f"{SV}, {SF}", OBJECT, normal=_norm_endpoint,
                         fill=_norm_endpoint, computed=True),
    "convergeConfig": Attr(UPDATE, "not read back: create and update poll until every task "
                           "runs (healthy, where it has a healthcheck) or the timeout",
                           f"{SV}, {SF}", OBJECT, read=False),
}

# Swarm configs and secrets cannot change: every input forces a new one.
SERVICE_CONFIG_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "Spec.Name", "K/config"),
    "data": Attr(REPLACE, "Spec.Data, base64", "K/config"),
}
SECRET_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "Spec.Name", "K/secret"),
    # Docker never returns a secret's data: state keeps it as sent.
    "data": Attr(REPLACE, "not read back (Docker returns no secret data): state keeps it "
                 "as sent", "K/secret", read=False),
}

VOLUME_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "the volume name", "K/volume"),
    "driver": Attr(REPLACE, "the driver", "K/volume", default="local"),
    "driverOpts": Attr(REPLACE, "Options", "K/volume", MAP),
}

IMAGE_ATTRS: dict[str, Attr] = {
    "name": Attr(REPLACE, "the reference as given", "K/image"),
    "keepLocally": Attr(UPDATE, "not read back (delete leaves the image when true)", "K/image",
                        read=False, default=False),
}

ATTRS: dict[str, dict[str, Attr]] = {
    CONTAINER: CONTAINER_ATTRS, NETWORK: NETWORK_ATTRS, VOLUME: VOLUME_ATTRS, IMAGE: IMAGE_ATTRS,
    SERVICE: SERVICE_ATTRS, SERVICE_CONFIG: SERVICE_CONFIG_ATTRS, SECRET: SECRET_ATTRS,
}

# When the provider's own diff replaces: containers are delete-before-replace
# (P/resources DeleteBeforeReplace), and so are volumes and networks given an
# explicit name (B/diff: a fixed name cannot exist twice). A replacement that only
# the program's replace_on_changes causes keeps the engine's create-before-delete,
# so such resources need delete_before_replace=True themselves.
PROVIDER_DELETE_BEFORE_REPLACE = frozenset({CONTAINER, NETWORK, VOLUME})


# --- normal forms and diffs ----------------------------------------------------


def normal_form(typ: str, key: str, value: Any) -> Any:
    attr = ATTRS[typ][key]
    return attr.normal(value) if attr.normal else value


def not_normal(typ: str, inputs: Mapping[str, Any]) -> list[str]:
    """The inputs that are unknown to the model or not in the provider's normal
    form, each as 'key: given -> read back'."""
    problems = []
    attrs = ATTRS.get(typ)
    if attrs is None:
        return [f"resource type {typ} is not in the provider model"]
    for key, value in inputs.items():
        if key not in attrs:
            problems.append(f"{key}: not in the provider model")
            continue
        try:
            normal = normal_form(typ, key, value)
        except (ValueError, ZeroDivisionError) as e:
            problems.append(f"{key}: {e}")
            continue
        if normal != value:
            problems.append(f"{key}: {value!r} is read back as {normal!r}")
    if typ == CONTAINER and "memory" in inputs and "memorySwap" not in inputs:
        problems.append("memorySwap: unset, so Docker's 2 x memory is read back")
    return problems


def numbers_as_sent(value: Any) -> Any:
    """Pulumi's wire carries every number as a float; the provider's are ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: numbers_as_sent(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_sent(v) for v in value]
    return value


def _canonical(attr: Attr, value: Any) -> Any:
    value = numbers_as_sent(value)
    if value is None:
        value = attr.default
    if attr.fill is not None and value is not None:
        value = attr.fill(value)
    if attr.kind == SET:
        return sorted(json.dumps(v, sort_keys=True) for v in (value or []))
    if attr.kind == MAP:
        return dict(value or {})
    if attr.kind == LIST:
        return list(value or [])
    return value


@dataclass(frozen=True)
class Diff:
    action: str  # "same", "update" or "replace"
    changed: tuple[str, ...] = ()  # input keys that differ
    replace_keys: tuple[str, ...] = ()  # those that force the replacement
    delete_before_replace: bool = False

    @property
    def same(self) -> bool:
        return self.action == "same"


def diff(typ: str, old: Mapping[str, Any], new: Mapping[str, Any],
         replace_on_changes: Sequence[str] = (), delete_before_replace: bool = False) -> Diff:
    """What the engine does when state holds `old` and the program now gives `new`.
    `replace_on_changes` and `delete_before_replace` are the resource's options."""
    attrs = ATTRS[typ]
    changed = []
    for key in sorted(set(old) | set(new)):
        attr = attrs.get(key)
        if attr is None:
            raise KeyError(f"{typ}: input {key!r} is not in the provider model")
        if key not in new and attr.computed:
            continue  # the program leaves it to the provider: whatever it read is fine
        if _canonical(attr, old.get(key)) != _canonical(attr, new.get(key)):
            if attr.suppress and attr.suppress(old.get(key), new.get(key)):
                continue
            changed.append(key)
    if not changed:
        return Diff("same")
    forced = tuple(k for k in changed if attrs[k].change == REPLACE and (
        attrs[k].replace_if is None or attrs[k].replace_if(old.get(k), new.get(k))))
    by_option = tuple(k for k in changed if k in replace_on_changes or "*" in replace_on_changes)
    if forced:
        dbr = delete_before_replace or typ in PROVIDER_DELETE_BEFORE_REPLACE
        return Diff("replace", tuple(changed), forced, dbr)
    if by_option:
        return Diff("replace", tuple(changed), by_option, delete_before_replace)
    return Diff("update", tuple(changed))


@dataclass
class ModelRow:
    """One row of the table, for the docs and the tests."""

    type: str
    key: str
    attr: Attr = field(repr=False)


def rows() -> list[ModelRow]:
    return [ModelRow(t, k, a) for t, attrs in ATTRS.items() for k, a in attrs.items()]
