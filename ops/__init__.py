"""Operator tools that work on a deployed stack's data through the Docker CLI:
backups and restores (no Pulumi import: they run beside `pulumi`, not in it)."""
