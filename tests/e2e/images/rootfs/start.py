#!/usr/bin/env python
"""Stand-in for the official Synapse image's /start.py, run mode only.

Contract kept: first argument is the mode ("run" if absent); the rest go to
Synapse, with `-m $SYNAPSE_WORKER` prepended unless `-m` is given and a
default --config-path unless one is given; privileges dropped with gosu to
$UID:$GID (GID 991 by default) or, when root without UID, to 991:991.
Like the official image, run mode changes no ownership anywhere.
"""
import os
import sys


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(2)


def main(argv, environ):
    mode = argv[1] if len(argv) > 1 else "run"
    if mode != "run":
        fail(f"Unknown execution mode '{mode}' (this stand-in supports only 'run')")
    args = argv[2:]

    if "-m" not in args:
        args = ["-m", environ.get("SYNAPSE_WORKER", "synapse.app.homeserver")] + args

    # The official check is a prefix match, so "-c", "--config-path=x" and
    # "--config-directory" all count as "a config was given".
    if not any(a.startswith(("--config-path", "-c")) for a in args):
        config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
        config_path = environ.get("SYNAPSE_CONFIG_PATH", config_dir + "/homeserver.yaml")
        if not os.path.exists(config_path):
            fail(f"Config file '{config_path}' does not exist.")
        args += ["--config-path", config_path]

    # Same allocator as the official image (libjemalloc2 comes with redis).
    jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    if os.path.isfile(jemalloc):
        environ["LD_PRELOAD"] = jemalloc

    if "UID" in environ:
        ownership = f"{int(environ['UID'])}:{int(environ.get('GID', '991'))}"
    elif os.getuid() == 0:
        ownership = "991:991"
    else:
        ownership = None

    print("Starting synapse with args " + " ".join(args), flush=True)
    command = [sys.executable] + args
    if ownership is None:
        os.execve(sys.executable, command, environ)
    os.execve("/usr/sbin/gosu", ["gosu", ownership] + command, environ)


if __name__ == "__main__":
    main(sys.argv, dict(os.environ))
