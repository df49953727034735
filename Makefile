# Operator and developer entry points. `make test` is what CI runs (.ci/run).
PY      := .venv/bin/python
STACK   ?= dev
STATE   := $(CURDIR)/.pulumi-state
# Only dev has a passphrase by default; every other stack needs its own (guard-secrets).
ifeq ($(STACK),dev)
PASSPHRASE := PULUMI_CONFIG_PASSPHRASE="$${PULUMI_CONFIG_PASSPHRASE-dev}"
endif
# A local state backend: state (secrets encrypted with the passphrase) in .pulumi-state/.
PULUMI  := PULUMI_BACKEND_URL=file://$(STATE) $(PASSPHRASE) pulumi

.PHONY: venv up preview down destroy-data guard-secrets render impact doctor schema-check backup restore \
        upgrade-postgres \
        test unit e2e host images \
        replay-up replay-down replay-destroy-data bench

venv: .venv/.installed
.venv/.installed: requirements.txt requirements-dev.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## A stack's secrets are encrypted with its passphrase: refuse a public default.
guard-secrets:
	@if [ "$(STACK)" != dev ] && [ -z "$${PULUMI_CONFIG_PASSPHRASE+set}$${PULUMI_CONFIG_PASSPHRASE_FILE+set}" ] \
	    && ! grep -qs '^secretsprovider:' config/Pulumi.$(STACK).yaml; then \
	  echo "refusing: stack $(STACK) needs PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE, or a secretsprovider in config/Pulumi.$(STACK).yaml); only dev has a default passphrase" >&2; \
	  exit 2; \
	fi

## Deploy the $(STACK) stack on the local Docker engine (needs the pulumi CLI).
## --refresh reads every container back first: one that was removed or stopped
## behind Pulumi's back is created or started again.
up: guard-secrets venv doctor schema-check
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) up --refresh --stack $(STACK)

preview: guard-secrets venv
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) preview --refresh --diff --stack $(STACK)

## Remove containers and networks; keep the data volumes (retained on delete) and
## the generated secrets (protected), so `make up` brings the same server back.
down: guard-secrets venv
	$(PULUMI) destroy --exclude-protected --stack $(STACK)

## Delete the stack's data for real: database, media, logs, and its secrets
## (signing key included); the scheduled backups' volume stays (docs/backups.md).
## Asks for CONFIRM=<stack>.
destroy-data: guard-secrets venv
	@[ "$(CONFIRM)" = "$(STACK)" ] || { echo "this deletes the database, media and signing key of stack $(STACK); run: make destroy-data STACK=$(STACK) CONFIRM=$(STACK)" >&2; exit 2; }
	$(PULUMI) stack output namePrefix --stack $(STACK) > $(STATE)/$(STACK).prefix
	$(PULUMI) state unprotect --all --yes --stack $(STACK)
	$(PULUMI) destroy --yes --stack $(STACK)
	docker volume ls -q | grep "^$$(cat $(STATE)/$(STACK).prefix)-" \
	    | grep -vx "$$(cat $(STATE)/$(STACK).prefix)-backups" | xargs -r docker volume rm
	@echo "kept: volume $$(cat $(STATE)/$(STACK).prefix)-backups, if any (the scheduled backups)"
	rm -f $(STATE)/$(STACK).prefix

## One backup of the running $(STACK) stack into $(DEST)/$(STACK)/<UTC time>: the
## database (pg_dump, Synapse keeps writing), the media, the generated secrets
## encrypted with BACKUP_PASSPHRASE (else the stack's passphrase) and a manifest;
## the newest $(KEEP) are kept (ops/backup.py, docs/backups.md).
DEST ?= backups
KEEP ?= 7
backup: guard-secrets venv
	$(PASSPHRASE) $(PY) -m ops.backup --config config/Pulumi.$(STACK).yaml --dest $(DEST) --keep $(KEEP)

## Restore FROM=<backup dir> into $(STACK), which must be down: database and media
## into its volumes before Synapse starts, the backup's secrets (signing key
## included) as the stack's secrets, then `make up`. FORCE=1 replaces data the
## stack's volumes already hold (refused otherwise, naming it).
restore: guard-secrets venv
	@[ -n "$(FROM)" ] || { echo "usage: make restore STACK=$(STACK) FROM=backups/$(STACK)/<UTC time> [FORCE=1]" >&2; exit 2; }
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	PULUMI_BACKEND_URL=file://$(STATE) $(PASSPHRASE) $(PY) -m ops.restore --config config/Pulumi.$(STACK).yaml \
	    --from $(FROM) --set-secrets $(if $(FORCE),--force)
	$(MAKE) up STACK=$(STACK)

## Move $(STACK)'s database to Postgres TO=<major> by dump and restore; IMAGE= the
## new image (default: images.postgres with its major version replaced). Synapse
## is down from the dump until the `make up` at the end; the old data stay in
## volume <namePrefix>-postgres-data-pg<old> (ops/upgrade_postgres.py, docs/upgrades.md).
upgrade-postgres: guard-secrets venv
	@[ -n "$(TO)" ] || { echo "usage: make upgrade-postgres STACK=$(STACK) TO=17 [IMAGE=postgres:17-bookworm]" >&2; exit 2; }
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	PULUMI_BACKEND_URL=file://$(STATE) $(PASSPHRASE) $(PY) -m ops.upgrade_postgres \
	    --config config/Pulumi.$(STACK).yaml --to $(TO) $(if $(IMAGE),--image $(IMAGE)) --set-config
	$(MAKE) up STACK=$(STACK)

## What a change does to $(STACK) before `make up`: every container created, replaced,
## updated in place or deleted, and why. SET="workers.rooms=8 log.level=DEBUG";
## AGAINST= the stack file it was deployed with (default: the committed one).
AGAINST ?= config/Pulumi.$(STACK).yaml
impact: venv
	$(PY) -m components.tools.impact --config config/Pulumi.$(STACK).yaml --against $(AGAINST) \
	    $(foreach s,$(SET),--set $(s))
	$(PY) -m ops.schema_check --config config/Pulumi.$(STACK).yaml $(foreach s,$(SET),--set $(s))

## Can the configured Synapse image run on $(STACK)'s database? Refuses an image the
## database is too new for, before anything is replaced (ops/schema_check.py);
## `make up` and `make impact` run it.
schema-check: venv
	$(PY) -m ops.schema_check --config config/Pulumi.$(STACK).yaml

## What this host's Docker engine would make drift or refuse, before deploying
## $(STACK) (components/tools/doctor.py); `make up` runs it first.
doctor: venv
	$(PY) -m components.tools.doctor --config config/Pulumi.$(STACK).yaml

## Every file each container of $(STACK) would get, without Pulumi, into out/$(STACK).
render: venv
	$(PY) -m components.tools.render --config config/Pulumi.$(STACK).yaml --out out/$(STACK)

## Every test: unit, mocks, real nginx, and end-to-end on a real Docker engine.
test: venv host images
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m "not e2e"

e2e: venv host images
	$(PY) -m pytest -m e2e

host:
	bash tests/e2e/host_setup.sh

## Benchmarks (not part of `make test`): planning, deploy, change, serving and federation cost on
## this machine; writes benchmarks/results/*.json, benchmarks/plots/*.png and BENCHMARKS.md.
bench: .venv/.bench-installed host images
	$(PY) -m benchmarks

.venv/.bench-installed: .venv/.installed requirements-bench.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

images: venv
	$(PY) tests/e2e/images/build.py

## Without the pulumi CLI: replay the program's registered resources on local
## Docker as `make up` / `make down` / `make destroy-data` would apply them.
replay-up: venv host images
	$(PY) -m tests.e2e.replay up --config config/Pulumi.$(STACK).yaml

replay-down: venv
	$(PY) -m tests.e2e.replay down --config config/Pulumi.$(STACK).yaml

replay-destroy-data: venv
	@[ "$(CONFIRM)" = "$(STACK)" ] || { echo "run: make replay-destroy-data STACK=$(STACK) CONFIRM=$(STACK)" >&2; exit 2; }
	$(PY) -m tests.e2e.replay down --delete-data --config config/Pulumi.$(STACK).yaml
