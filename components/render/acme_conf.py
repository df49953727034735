"""`nginx.tls: acme`: the ACME client container's script, paths and metrics, as
plain data (no Pulumi import). containers.py makes its spec; nginx_conf.py serves
what it publishes.

The client is lego (go-acme/lego), run from its official image (`goacme/lego`:
Alpine, busybox, /usr/bin/lego; the stand-in is Debian's lego package, same
version). One static binary that answers HTTP-01 from a webroot, keeps its account
and certificates in one directory (`--path`) and trusts a private CA through
LEGO_CA_CERTIFICATES. Certificates are obtained at run time, never through Pulumi
state: the loop below (POSIX sh, so busybox runs it) does, every CHECK_S:
  1. read the stored certificate's names and expiry (`lego list`);
  2. if there is none for today's names, fewer than renewDays are left, or the
     operator asked (`docker kill -s USR1 <prefix>-acme`), `lego run`: lego writes
     the token under WEBROOT, nginx's plain-HTTP listener serves it, the ACME
     server fetches it. An account the server no longer knows (a reset test
     server, a changed directory) is registered anew, once;
  3. publish the stored certificate and key into PUBLIC/live under names of their
     own, then CERTIFICATE_CONF naming them (one rename): nginx's entrypoint sees
     that file change, runs `nginx -t` and reloads, as for any config change.
     Until the first certificate, nginx has no such file and refuses TLS
     handshakes (nginx_conf: ssl_reject_handshake), while HTTP works;
  4. write STATE (one line: "ok: ..." or "failing: ...", the healthcheck) and
     METRICS_FILE, which nginx serves to Prometheus on METRICS_PORT.
A failed attempt keeps whatever certificate is published and is retried after
retrySeconds, doubled on each failure up to MAX_RETRY_S.
"""

from __future__ import annotations

import shlex

from components.plan.settings import AcmeSettings

STORE = "/acme"  # lego's --path: account key, certificates; the retained volume
# Shared with nginx (read-only there), a tmpfs of root and nginx's group: the
# challenge tokens (lego's webroot), the published certificate, the status.
PUBLIC = "/acme-public"
WEBROOT = PUBLIC  # lego writes WEBROOT/.well-known/acme-challenge/<token>
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
LIVE = f"{PUBLIC}/live"
CERTIFICATE_CONF = f"{LIVE}/certificate.conf"  # nginx includes it in the TLS server
STATUS = f"{PUBLIC}/status"
STATE = f"{STATUS}/state"
METRICS_FILE = f"{STATUS}/metrics.prom"
METRICS_PORT = 9114  # nginx serves METRICS_FILE here, on the stack's networks only
RUN_SCRIPT = "/etc/acme/run.sh"
CA_BUNDLE = "/etc/acme/ca-bundle.pem"  # nginx.acme.caBundle
CHECK_S = 3600  # how often the stored certificate's expiry is looked at
MAX_RETRY_S = 6 * 3600
STATUS_EVERY_S = 60  # STATE and METRICS_FILE rewritten at least this often
KEY_TYPE = "ec256"  # P-256 rather than lego's default RSA 2048: smaller, faster handshakes
METRICS = {  # name -> help
    "synapse_acme_certificate_expiry_days":
        "Days until the certificate given to nginx expires; absent before the first.",
    "synapse_acme_certificate_expiry_timestamp_seconds":
        "When the certificate given to nginx expires (Unix time); absent before the first.",
    "synapse_acme_failures": "Attempts that failed since the last success (0: none).",
    "synapse_acme_last_success_timestamp_seconds":
        "When a certificate was last obtained (Unix time); 0: not since the container started.",
    "synapse_acme_last_failure_timestamp_seconds":
        "When an attempt last failed (Unix time); 0: not since the container started.",
}


def healthcheck_test() -> tuple[str, ...]:
    """Healthy while a valid certificate is published and no attempt is failing;
    the state line is the probe's output, so `docker inspect` shows why."""
    state = shlex.quote(STATE)
    return ("CMD-SHELL", f"cat {state} && grep -q '^ok' {state}")


def env(acme: AcmeSettings) -> dict[str, str]:
    return {"LEGO_CA_CERTIFICATES": CA_BUNDLE} if acme.ca_bundle else {}


def lego_args(acme: AcmeSettings) -> list[str]:
    """lego's global options: account, server, store, HTTP-01 from the webroot."""
    args = ["--accept-tos", "--email", acme.email, "--server", acme.directory,
            "--path", STORE, "--http", "--http.webroot", WEBROOT, "--key-type", KEY_TYPE]
    for name in acme.names:
        args += ["--domains", name]
    return args


def _metrics_function() -> list[str]:
    values = {
        "synapse_acme_certificate_expiry_days": "$days",
        "synapse_acme_certificate_expiry_timestamp_seconds": "$expiry",
        "synapse_acme_failures": "$failures",
        "synapse_acme_last_success_timestamp_seconds": "$last_success",
        "synapse_acme_last_failure_timestamp_seconds": "$last_failure",
    }
    lines = ["write_metrics() {  # METRICS_FILE, replaced atomically",
             "  days=''",
             '  [ -n "$expiry" ] && days=$(awk -v e="$expiry" -v n="$(date +%s)" '
             "'BEGIN { printf \"%.3f\", (e - n) / 86400 }')",
             "  {"]
    for name, text in METRICS.items():
        value = values[name]
        guard = f'[ -n "{value}" ] && ' if "expiry" in name else ""
        lines += [f"    echo {shlex.quote(f'# HELP {name} {text}')}",
                  f"    echo '# TYPE {name} gauge'",
                  f'    {guard}echo "{name} {value}"']
    lines += ["  } > \"$metrics.new\" && mv \"$metrics.new\" \"$metrics\"", "}"]
    return lines


def render_run_script(acme: AcmeSettings) -> str:
    q = shlex.quote
    first = acme.names[0]  # lego names the certificate after its first domain
    names = ", ".join(acme.names)  # as `lego list` prints them
    return "\n".join([
        "#!/bin/sh",
        "# The ACME client's loop (components/render/acme_conf.py).",
        "set -u",
        "umask 022",
        # goacme/lego's binary is /usr/bin/lego (its entrypoint); should a tag keep
        # it at the root instead, find it there too.
        'command -v lego >/dev/null || PATH="$PATH:/"',
        f"store={q(STORE)} live={q(LIVE)} conf={q(CERTIFICATE_CONF)}",
        f"state={q(STATE)} metrics={q(METRICS_FILE)}",
        f"first={q(first)} names={q(names)}",
        f"renew_s={acme.renew_days * 86400} retry_s={acme.retry_seconds} max_retry_s={MAX_RETRY_S}",
        f"check_s={CHECK_S} status_every_s={STATUS_EVERY_S}",
        f"set -- {' '.join(q(a) for a in lego_args(acme))}",
        'mkdir -p "$live" "$(dirname "$state")" || exit 1',
        "log() { echo \"acme: $*\"; }",
        "",
        "sorted() { echo \"$1\" | tr ',' '\\n' | tr -d ' ' | sort | tr '\\n' ' '; }",
        "",
        "stored() {  # the stored certificate for today's names: its expiry (Unix time), or nothing",
        '  lego --path "$store" list 2>/dev/null | awk -v first="$first" \'',
        '    $1 == "Certificate" && $2 == "Name:" { mine = ($3 == first) }',
        '    mine && $1 == "Domains:" { sub(/^ *Domains: */, ""); domains = $0 }',
        '    mine && $1 == "Expiry" { when = $3 " " $4 }',
        '    END { if (when != "") print when "|" domains }\' | {',
        "    IFS='|' read -r when domains || return 0",
        '    [ "$(sorted "$domains")" = "$(sorted "$names")" ] || return 0',
        '    date -u -d "$when" +%s',
        "  }",
        "}",
        "",
        "publish() {  # the stored certificate and key, as nginx reads them, if not already",
        '  crt="$store/certificates/$first.crt" key="$store/certificates/$first.key"',
        '  [ -s "$crt" ] && [ -s "$key" ] || return 0',
        # sha256sum: busybox has it (Alpine's and Debian's), not always cksum.
        '  sum=$(cat "$crt" "$key" | sha256sum | cut -c 1-16)',
        '  [ ${#sum} -eq 16 ] || return 1',
        '  grep -qs "cert-$sum.pem" "$conf" && return 0',
        '  cp "$crt" "$live/cert-$sum.pem" && cp "$key" "$live/key-$sum.pem" &&',
        # Readable by nginx's group alone: the volume's root is 0750 root:nginx.
        '    chmod 0444 "$live/cert-$sum.pem" "$live/key-$sum.pem" || return 1',
        "  {",
        '    echo "ssl_certificate $live/cert-$sum.pem;"',
        '    echo "ssl_certificate_key $live/key-$sum.pem;"',
        "    echo 'ssl_reject_handshake off;'",
        '  } > "$conf.new" && mv "$conf.new" "$conf" || return 1',
        '  for f in "$live"/cert-*.pem "$live"/key-*.pem; do',
        '    case "$f" in *"-$sum.pem") ;; *) rm -f "$f" ;; esac',
        "  done",
        '  log "published the certificate for $names"',
        "}",
        "",
        "obtain() {  # lego run; an account the server forgot is registered anew, once",
        '  lego "$@" run > "$store/last-attempt.log" 2>&1; rc=$?',
        '  cat "$store/last-attempt.log"',
        '  if [ $rc -ne 0 ] && grep -q accountDoesNotExist "$store/last-attempt.log"; then',
        '    log "the ACME server does not know this account: registering a new one"',
        '    rm -rf "$store/accounts"',
        '    lego "$@" run > "$store/last-attempt.log" 2>&1; rc=$?',
        '    cat "$store/last-attempt.log"',
        "  fi",
        '  [ $rc -eq 0 ] && return 0',
        '  error=$(grep -v "^ *$" "$store/last-attempt.log" | tail -n 1 | cut -c 1-300)',
        "  return 1",
        "}",
        "",
        *_metrics_function(),
        "",
        "write_state() {",
        '  now=$(date +%s)',
        '  if [ -z "$expiry" ]; then',
        '    line="failing: no certificate for $names yet"',
        '  elif [ "$expiry" -le "$now" ]; then',
        '    line="failing: the certificate for $names has expired"',
        '  elif [ "$failures" -gt 0 ]; then',
        '    line="failing: still serving the certificate for $names"',
        '  else',
        '    line="ok: serving a certificate for $names, $(( (expiry - now) / 86400 )) days left"',
        "  fi",
        '  [ "$failures" -gt 0 ] && line="$line; $failures attempts failed, next in ${next_s}s: $error"',
        "  write_metrics  # first: whoever sees the new state finds these metrics",
        '  echo "$line" > "$state.new" && mv "$state.new" "$state"',
        "}",
        "",
        "failures=0 last_success=0 last_failure=0 error='' next_s=0 asked=0 woken=0",
        "# USR1: a renewal asked for, pending until one succeeds; it also ends a sleep.",
        "trap 'asked=1 woken=1' USR1",
        "trap 'exit 0' TERM INT QUIT",
        "while :; do",
        '  expiry=$(stored)',
        "  publish",
        '  now=$(date +%s)',
        '  if [ -z "$expiry" ] || [ $((expiry - now)) -lt "$renew_s" ] || [ "$asked" = 1 ]; then',
        '    log "obtaining a certificate for $names"',
        '    if obtain "$@"; then',
        "      failures=0 asked=0 last_success=$(date +%s)",
        '      expiry=$(stored)',
        "      publish",
        "    else",
        "      failures=$((failures + 1)) last_failure=$(date +%s)",
        '      log "failed ($failures in a row): $error"',
        "    fi",
        "  fi",
        '  next_s=$check_s',
        '  if [ "$failures" -gt 0 ]; then',
        '    next_s=$retry_s n=1',
        '    while [ $n -lt "$failures" ] && [ "$next_s" -lt "$max_retry_s" ]; do',
        '      next_s=$((next_s * 2)) n=$((n + 1))',
        '    done',
        '    [ "$next_s" -gt "$max_retry_s" ] && next_s=$max_retry_s',
        "  fi",
        "  # Sleep in steps, keeping the status fresh; USR1 ends it.",
        '  left=$next_s woken=0',
        '  while [ "$left" -gt 0 ] && [ "$woken" = 0 ]; do',
        "    write_state",
        '    step=$status_every_s; [ "$step" -gt "$left" ] && step=$left',
        '    sleep "$step" & wait $!',
        '    kill $! 2>/dev/null',
        "    left=$((left - step))",
        "  done",
        "done",
        "",
    ])
