"""PLACEHOLDER (lead): minimal nginx.conf so the rest of the program runs; the
routing helper replaces this file with the generated routing config."""

HEALTH_SOCKET = "/run/nginx-health.sock"
SERVED_BY_HEADER = "X-Synapse-Worker"


def render_nginx_conf(plan) -> str:
    return "events {}\nhttp {\n  server { listen unix:%s; location = /health { return 200; } }\n}\n" % HEALTH_SOCKET
