# Operator and developer entry points. `make test` is what CI runs (.ci/run).
PY      := .venv/bin/python
STACK   ?= dev
STATE   := $(CURDIR)/.pulumi-state
# A local state backend: state (secrets encrypted with the passphrase) in .pulumi-state/.
PULUMI  := PULUMI_BACKEND_URL=file://$(STATE) PULUMI_CONFIG_PASSPHRASE="$${PULUMI_CONFIG_PASSPHRASE-dev}" pulumi

.PHONY: venv up preview down render test unit e2e host images replay-up replay-down

venv: .venv/.installed
.venv/.installed: requirements.txt requirements-dev.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## Deploy the $(STACK) stack on the local Docker engine (needs the pulumi CLI).
up: venv
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) up --stack $(STACK)

preview: venv
	mkdir -p $(STATE)
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) preview --diff --stack $(STACK)

down: venv
	$(PULUMI) destroy --stack $(STACK)

## Every file each container of $(STACK) would get, without Pulumi, into out/$(STACK).
render: venv
	$(PY) -m components.render --config config/Pulumi.$(STACK).yaml --out out/$(STACK)

## Every test: unit, mocks, real nginx, and end-to-end on a real Docker engine.
test: venv host images
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m "not e2e"

e2e: venv host images
	$(PY) -m pytest -m e2e

host:
	bash tests/e2e/host_setup.sh

images: venv
	$(PY) tests/e2e/images/build.py

## Without the pulumi CLI: replay the program's registered resources on local Docker.
replay-up: venv host images
	$(PY) -m tests.e2e.replay up --config config/Pulumi.$(STACK).yaml

replay-down: venv
	$(PY) -m tests.e2e.replay down --config config/Pulumi.$(STACK).yaml
