# Every target bootstraps .venv from the pinned requirement files first, so that a fresh clone
# needs nothing but `make test` (or `make lab`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
# ansible-test wants the collection under ansible_collections/<namespace>/<name>, in a git tree of its own.
SANITY_DIR ?= .tmp/sanity
SANITY_ROOT := $(SANITY_DIR)/ansible_collections/dgxspark/sglang
SANITY_ARGS ?=
# ansible-test 2.19 bootstraps pip 24.2 into its venvs with a get-pip.py it downloads from a host
# this network cannot reach; tests/sanity/get_pip.py does the same job offline (see its docstring).
GET_PIP_CACHE := $(HOME)/.ansible/test/cache/get_pip_24_2.py

.PHONY: test unit sanity lint molecule reboot-test memory-test fault-test router-test awx-test lab lab-down lab-deps build clean

# requirements-sglang.txt: SGLang's own argument parser for the unit tests, without its GPU stack (--no-deps: every
# module it imports is pinned there; about 950 MB, most of it triton, and a minute).
$(BIN)/.stamp: requirements.txt meta/requirements.txt requirements-dev.txt requirements-sglang.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-sglang.txt
	touch $@

venv: $(BIN)/.stamp

test: unit sanity lint molecule reboot-test memory-test fault-test router-test awx-test
	@echo "make test: all gates passed"

# lab-deps: promtool (Debian's prometheus) for the monitoring rules' tests.
unit: venv lab-deps
	$(BIN)/pytest tests/unit

# The collection is copied (tracked and new files, not ignored ones) to a path ansible-test accepts;
# --venv lets ansible-test install the exact tool versions it pins for each sanity test.
sanity: venv
	install -D -m 0644 tests/sanity/get_pip.py $(GET_PIP_CACHE)
	rm -rf $(SANITY_DIR)
	mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard | grep -zv '^collections/' \
	  | xargs -0 cp --parents -d -t $(SANITY_ROOT)
	cd $(SANITY_ROOT) && git init -q && \
	  $(abspath $(BIN))/ansible-test sanity --venv --python 3.11 --color no $(SANITY_ARGS) \
	  | grep -Ev '^(WARNING: Location|Looking in|Collecting|Downloading|Installing|Successfully|Requirement already| +━)' || exit $${PIPESTATUS[0]}

# antsibull-docs lints the built collection, installed (the checkout's collections/ link would loop), on its own: the
# docs of modules, filters and role argument specs, and every reference in them (to this collection and ansible.builtin).
DOCS_LINT_DIR := .tmp/docs-lint
lint: venv
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production
	$(BIN)/antsibull-changelog lint
	rm -rf $(DOCS_LINT_DIR) && mkdir -p $(DOCS_LINT_DIR)
	$(BIN)/ansible-galaxy collection build --output-path $(DOCS_LINT_DIR) . >/dev/null
	ANSIBLE_COLLECTIONS_PATH=$(abspath $(DOCS_LINT_DIR)) $(BIN)/ansible-galaxy collection install \
	  -p $(DOCS_LINT_DIR) $(DOCS_LINT_DIR)/dgxspark-sglang-*.tar.gz >/dev/null
	ANSIBLE_COLLECTIONS_PATH=$(abspath $(DOCS_LINT_DIR)) ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
	  $(BIN)/antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs dependent \
	  --disallow-unknown-collection-refs $(DOCS_LINT_DIR)/ansible_collections/dgxspark/sglang

# Debian packages the lab needs (systemd-nspawn, debootstrap, iproute2, ...), installed only when missing.
lab-deps:
	bash tests/lab/install-deps.sh

# Each scenario: destroy, create (tests/lab/lab.py up), converge, idempotence, verify, destroy (fresh-host: one
# driverless machine, with a prepare step: the first run, which stops for the driver's reboot).
MOLECULE_SCENARIOS ?= lab site fresh-host
molecule: venv lab-deps
	for s in $(MOLECULE_SCENARIOS); do $(BIN)/molecule test -s $$s || exit 1; done

# cx7_network, then a reboot, on one lab machine whose management port belongs to NetworkManager (as on
# DGX OS): SSH and NetworkManager must still have the port afterwards. A lab of its own (a reboot would
# break a cluster's run); it takes the lab ids of the environment, as the scenarios do.
reboot-test: venv lab-deps
	$(BIN)/pytest -p no:cacheprovider tests/integration/reboot

# The memory_guard role (earlyoom) on one lab machine with a hard memory limit that it sees as its memory
# (`lab.py up 1 --memory-max`, lxcfs): a process named like SGLang's scheduler outgrows it and earlyoom must kill it,
# not a larger bystander, before the kernel does; SSH must still answer. A lab of its own, with the environment's ids.
memory-test: venv lab-deps
	$(BIN)/pytest -p no:cacheprovider tests/integration/memory

# Faults a serving group must survive (tests/integration/faults), on a lab of its own (two machines, the native runtime,
# the torch venv): rank 0 killed, the head rebooted, a CX7 twin's cable pulled, the management link cut while site.yml
# is in sglang_server. The group's recovery is roles/sglang_server/README.md's "When a rank dies".
fault-test: venv lab-deps
	$(BIN)/pytest -p no:cacheprovider tests/integration/faults

# SGLang's router (the real SMG binary, from a wheelhouse served to the machines) in front of three one-node SGLang
# groups (native runtime): requests spread over the groups of their model, and still served with one group stopped;
# the role's --check, second run and API key; verify.yml on a group and the router. A lab of its own (up 3, a group
# stopped), with the environment's ids; the wheelhouse is downloaded once into the lab folder.
router-test: venv lab-deps
	$(BIN)/pytest -p no:cacheprovider tests/integration/router

# The collection as AWX runs it (tests/integration/installed): the tarball built and installed into an empty
# collections path, then dgxspark.sglang.site, .verify and .site again (no API key: read back, nothing restarts) run by
# ansible-runner in a private data dir laid out as AWX lays it out, from outside the checkout. A lab of its own
# (up 2, down); it takes the lab ids of the environment, as the scenarios do.
awx-test: venv lab-deps
	$(BIN)/pytest -p no:cacheprovider tests/integration/installed

# The whole job on the lab: two machines (with a read-only torch venv for the gloo all-reduce),
# site.yml, then verify.yml, whose last lines say where the report is.
lab: venv lab-deps
	DGXSPARK_LAB_TORCH=1 python3 tests/lab/lab.py up 2
	$(BIN)/ansible-playbook site.yml -i inventories/lab
	$(BIN)/ansible-playbook playbooks/verify.yml -i inventories/lab

lab-down:
	python3 tests/lab/lab.py down

build: venv
	$(BIN)/ansible-galaxy collection build --force .

clean:
	rm -rf .tmp $(VENV) dgxspark-sglang-*.tar.gz
