"""The scheduled backup container (`synapse:backup`): its scripts, environment and
sealed secrets, as plain data (no Pulumi import). containers.py makes its spec.

It runs the stack's own Postgres image, so pg_dump matches the server's major
version, and uses only what the official image has: bash, coreutils, gosu, the
Postgres client tools and perl-base (Essential in Debian, with IO::Socket::INET)
for the metrics listener. At each scheduled time (settings.BackupSettings) it
writes a backup in the layout `make backup` writes (ops/archive.py), into the
stack's retained `backups` volume at /backups/<stack>/<UTC time>:
  1. database.dump: pg_dump over Postgres's socket, in one snapshot, taking only
     ACCESS SHARE locks, so Synapse's writes go on (ops/backup.py says why);
  2. media.tar: the media store, read-only, after the dump;
  3. secrets.enc: the program's sealed file (backup_secrets.py), copied;
  4. manifest.json: the image's Synapse version, Postgres's, the schema version,
     sizes and SHA-256; then the newest `keep` backups are kept.
A run that fails leaves `.failed` (its output) in the stack's folder, which turns
the container unhealthy, and is retried after RETRY_S (or at the next scheduled
time, if sooner); the next good run removes it. Prometheus scrapes the time of
the newest complete backup and whether the last run failed (METRICS).
"""

from __future__ import annotations

import shlex
from typing import Mapping

from components.render import backup_secrets
from components.plan import secret_keys
from components.plan import validators
from components.plan.settings import Settings
from components.render.synapse_config import MEDIA_DIR, POSTGRES_DB, POSTGRES_USER
from components.plan.topology import POSTGRES_SOCKET_DIR

BACKUP_DIR = "/backups"  # the `backups` volume; a stack's backups in BACKUP_DIR/<stack>
RUN_SCRIPT = f"{secret_keys.CONFIG_DIR}/backup/run.sh"
METRICS_SCRIPT = f"{secret_keys.CONFIG_DIR}/backup/metrics.pl"
SEALED_SECRETS = secret_keys.BY_KEY["backupPassphrase"].path
METRICS_PORT = 9187  # on the backend network only, for the stack's Prometheus
METRICS_FILE = "/tmp/backup.prom"
FAILED = ".failed"  # in the stack's folder while the last run failed
RETRY_S = 600
# A backup's files, in the order they are written, as every backup tool writes and
# reads them (ops/archive.py): `<time>.partial` until whole, then `<time>`.
DATABASE, MEDIA, SECRETS, MANIFEST = "database.dump", "media.tar", "secrets.enc", "manifest.json"
PAYLOAD = (DATABASE, MEDIA, SECRETS)
PARTIAL = ".partial"
METRICS = {  # name -> help
    "synapse_backup_last_success_timestamp_seconds":
        "When the newest complete backup was finished (Unix time); 0: none yet.",
    "synapse_backup_last_run_failed": "1 while the last scheduled run failed, else 0.",
    "synapse_backup_last_failure_timestamp_seconds":
        "When the last failed run ended (Unix time); 0: none since the container started.",
    "synapse_backup_last_size_bytes": "Size of the newest complete backup.",
    "synapse_backup_kept": "Complete backups in the volume.",
}


def stack_folder(settings: Settings) -> str:
    return f"{BACKUP_DIR}/{settings.stack}"


def env(settings: Settings) -> dict[str, str]:
    b = settings.backup
    image = settings.images.synapse
    return {
        "STACK": settings.stack,
        "PERIOD": str(b.period_s),
        "OFFSET": str(b.offset_s),
        "KEEP": str(b.keep),
        "RETRY": str(min(RETRY_S, b.period_s)),
        # What the manifest records (the container cannot ask main).
        "SYNAPSE_IMAGE": image,
        "SYNAPSE_VERSION": (validators.image_tag(image) or "").removeprefix("v")
        if validators.synapse_version(image) else "",
        "POSTGRES_IMAGE": settings.images.postgres,
        # libpq: Postgres's socket directory, where local connections are trusted
        # (containers.POSTGRES_SOCKET_ARGS: only the sockets group reaches it).
        "PGHOST": POSTGRES_SOCKET_DIR,
        "PGUSER": POSTGRES_USER,
        "PGDATABASE": POSTGRES_DB,
    }


def healthcheck_test(settings: Settings) -> tuple[str, ...]:
    failed = shlex.quote(f"{stack_folder(settings)}/{FAILED}")
    return ("CMD-SHELL", f"test ! -e {failed}")


def render_sealed_secrets(settings: Settings, secrets: Mapping[str, str]) -> str:
    """The generated secrets sealed with the backup passphrase; with the render
    command's placeholders, a placeholder (nothing to seal)."""
    passphrase = secrets["backupPassphrase"]
    if passphrase == secret_keys.PLACEHOLDERS["backupPassphrase"]:
        return passphrase + "\n"
    values = {k: secrets[k] for k in secret_keys.GENERATED}
    return backup_secrets.seal(values, passphrase, backup_secrets.stack_salt(settings.name_prefix))


def render_metrics_script() -> str:
    """A one-file HTTP/1.0 server: every request gets METRICS_FILE. One client at a
    time, each given 5 s (only the stack's Prometheus reaches it)."""
    return "\n".join([
        "# The backup container's metrics for Prometheus (components/backup_conf.py).",  # pre-move name: no byte changed
        "use strict;",
        "use warnings;",
        "use IO::Socket::INET;",
        "my ($port, $file) = @ARGV;",
        "my $server = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port,",
        "    Listen => 16, ReuseAddr => 1) or die \"backup metrics: cannot listen on $port: $!\\n\";",
        "$SIG{PIPE} = 'IGNORE';",
        "while (1) {",
        "    my $client = $server->accept or next;",
        "    eval {",
        "        local $SIG{ALRM} = sub { die \"timeout\\n\" };",
        "        alarm 5;",
        "        while (defined(my $line = <$client>)) { last if $line =~ /^\\r?\\n$/; }",
        "        my $body = '';",
        "        if (open(my $fh, '<', $file)) { local $/; $body = <$fh> // ''; close $fh; }",
        "        print $client \"HTTP/1.0 200 OK\\r\\nContent-Type: text/plain; version=0.0.4\\r\\n\"",
        "            . 'Content-Length: ' . length($body) . \"\\r\\nConnection: close\\r\\n\\r\\n\" . $body;",
        "        alarm 0;",
        "    };",
        "    close $client;",
        "}",
        "",
    ])


def _metrics_function() -> list[str]:
    lines = ["write_metrics() {  # METRICS_FILE, replaced atomically",
             "  local newest last=0 size=0 kept failed=0",
             '  newest=$(complete | tail -n1)',
             '  kept=$(complete | wc -l)',
             '  if [ -n "$newest" ]; then',
             f'    last=$(stat -c %Y "$newest/{MANIFEST}")',
             '    size=$(du -sb "$newest" | cut -f1)',
             "  fi",
             f'  [ -e "$dest/{FAILED}" ] && failed=1',
             "  {"]
    values = {"synapse_backup_last_success_timestamp_seconds": "$last",
              "synapse_backup_last_run_failed": "$failed",
              "synapse_backup_last_failure_timestamp_seconds": "$last_failure",
              "synapse_backup_last_size_bytes": "$size",
              "synapse_backup_kept": "$kept"}
    for name, text in METRICS.items():
        lines += [f"    echo {shlex.quote(f'# HELP {name} {text}')}",
                  f"    echo '# TYPE {name} gauge'",
                  f'    echo "{name} {values[name]}"']
    lines += [f"  }} > {METRICS_FILE}.new && mv {METRICS_FILE}.new {METRICS_FILE}", "}"]
    return lines


def render_run_script(settings: Settings, uid: int) -> str:
    """The container's entrypoint (bash): as root, hand the volume to the Synapse
    user (who owns the media it reads and reaches Postgres's socket through the
    sockets group), then, as that user (`uid`), serve metrics and back up on
    schedule."""
    q = shlex.quote
    take = [
        "take() {  # one backup; prints its folder, or fails with a message",
        "  local t0 name work schema pgver f sep",
        "  t0=$(date +%s)",
        '  name=$(date -u -d "@$t0" +%Y%m%dT%H%M%SZ)',
        f'  work="$dest/$name{PARTIAL}"',
        '  mkdir "$work" || return 1',
        "  schema=$(psql -X -At -c 'SELECT version FROM schema_version') || return 1",
        '  [[ $schema =~ ^[0-9]+$ ]] || { echo "no Synapse schema in the database: $schema"; return 1; }',
        "  pgver=$(psql -X -At -c 'SHOW server_version') || return 1",
        f'  pg_dump --format=custom --file="$work/{DATABASE}" || return 1',
        # GNU tar exits 1 when a file changed while read (Synapse keeps writing):
        # the dump names only files written before it, which are whole.
        f'  tar --create --numeric-owner --directory={MEDIA_DIR} --file="$work/{MEDIA}" .'
        ' || [ $? = 1 ] || return 1',
        f'  cp {SEALED_SECRETS} "$work/{SECRETS}" || return 1',
        "  {",
        "    printf '{\\n \"format\": 1,\\n \"scheduled\": true,\\n \"stack\": \"%s\",\\n' \"$STACK\"",
        "    printf ' \"created_at\": \"%s\",\\n' \"$(date -u -d \"@$t0\" +%Y-%m-%dT%H:%M:%S+00:00)\"",
        "    printf ' \"synapse_version\": \"%s\",\\n \"synapse_image\": \"%s\",\\n' "
        "\"$SYNAPSE_VERSION\" \"$SYNAPSE_IMAGE\"",
        "    printf ' \"postgres_image\": \"%s\",\\n \"postgres_server_version\": \"%s\",\\n' "
        "\"$POSTGRES_IMAGE\" \"${pgver//\\\"/}\"",
        "    printf ' \"schema_version\": %s,\\n \"seconds\": {\"total\": %s},\\n \"files\": {' "
        "\"$schema\" \"$(( $(date +%s) - t0 ))\"",
        "    sep=",
        f"    for f in {' '.join(PAYLOAD)}; do",
        "      printf '%s\\n  \"%s\": {\"bytes\": %s, \"sha256\": \"%s\"}' \"$sep\" \"$f\" "
        "\"$(stat -c %s \"$work/$f\")\" \"$(sha256sum < \"$work/$f\" | cut -d' ' -f1)\"",
        "      sep=,",
        "    done",
        "    printf '\\n }\\n}\\n'",
        f'  }} > "$work/{MANIFEST}" || return 1',
        '  mv "$work" "$dest/$name" || return 1',
        '  echo "$dest/$name"',
        "}",
    ]
    return "\n".join([
        "#!/bin/bash",
        # Pre-move file name below, kept so that moving it changed no rendered byte.
        "# synapse:backup: a backup of the stack at every scheduled time (components/backup_conf.py).",
        "set -u",
        f'dest="{BACKUP_DIR}/$STACK"',
        'if [ "$(id -u)" = 0 ]; then',
        '  mkdir -p "$dest"',
        f'  chown {uid}:{uid} {BACKUP_DIR} "$dest" && chmod 0700 {BACKUP_DIR}',
        f'  exec gosu {uid}:{uid} /bin/bash "$0" "$@"',
        "fi",
        "umask 077",
        f'rm -rf "$dest"/*{PARTIAL}  # a run killed half-way',
        "last_failure=0",
        "complete() {  # complete backups, oldest first",
        f'  ls -1d "$dest"/*/{MANIFEST} 2>/dev/null | grep -v "\\{PARTIAL}/" | sed "s,/{MANIFEST}$,," | sort',
        "}",
        *_metrics_function(),
        *take,
        f"serve() {{ perl {METRICS_SCRIPT} {METRICS_PORT} {METRICS_FILE} & server=$!; }}",
        "write_metrics",
        "serve",
        "trap 'kill \"$server\" 2>/dev/null; exit 0' TERM INT",
        f'echo "backup: schedule {q(settings.backup.schedule)} (UTC), keeping $KEEP, into $dest"',
        "while :; do",
        "  now=$(date +%s)",
        "  next=$(( (now - OFFSET) / PERIOD * PERIOD + PERIOD + OFFSET ))",
        f'  if [ -e "$dest/{FAILED}" ] && [ $((now + RETRY)) -lt "$next" ]; then next=$((now + RETRY)); fi',
        '  sleep $((next - now)) & wait $!',
        '  kill -0 "$server" 2>/dev/null || serve',
        "  if out=$(take 2>&1); then",
        f'    rm -f "$dest/{FAILED}"',
        '    echo "backup: ${out##*$\'\\n\'}"',
        '    complete | head -n "-$KEEP" | while read -r old; do rm -rf "$old"; echo "backup: removed $old"; done',
        "  else",
        f'    rm -rf "$dest"/*{PARTIAL}',
        f'    printf "%s\\n" "$out" > "$dest/{FAILED}"',
        "    last_failure=$(date +%s)",
        '    echo "backup failed: $out" >&2',
        "  fi",
        "  write_metrics",
        "done",
        "",
    ])

