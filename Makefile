# The two commands of the README:
#   make demo   set up, create the demo database, run backup.yml on the default inventory
#   make test   set up, then lint, ansible-test sanity on the collection, and every test (what .ci/run runs)
# and: make collection (the Ansible collection's tarball in var/collection/), make sanity (its ansible-test sanity)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PLAYBOOKS := $(wildcard *.yml playbooks/*.yml)

.PHONY: demo test setup lint syntax sanity pytest docs collection bench clean

demo: $(VENV)/.installed
	@test -f demo/gym.db || $(BIN)/python tools/demo_db.py demo/gym.db --members 344
	$(BIN)/ansible-playbook backup.yml

test: system $(VENV)/.installed lint syntax sanity pytest

setup: system $(VENV)/.installed

system:
	tools/setup-system.sh test

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	tools/setup-system.sh demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -e .   # the sqlite-fleet command, editable: it runs this checkout's playbooks
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production

syntax: $(VENV)/.installed
	@for p in $(PLAYBOOKS); do $(BIN)/ansible-playbook --syntax-check $$p >/dev/null || exit 1; done
	@echo "syntax ok: $(PLAYBOOKS)"

# ansible-test sanity on the collection built from these sources; its environments are cached in var/ansible-test
sanity: $(VENV)/.installed
	$(BIN)/python tools/sanity.py

pytest: $(VENV)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

docs: $(VENV)/.installed
	$(BIN)/python tools/gen_config_docs.py

collection: $(VENV)/.installed
	$(BIN)/python tools/build_collection.py

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var demo .pytest_cache .ruff_cache
