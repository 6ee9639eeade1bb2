# Two commands: `make demo` runs a local hub with all three services; `make test` runs the suite.
# Both set up everything first: the package into .venv, configurable-http-proxy from npm into
# node_modules, and (for tests) Debian packages the suite needs.

VENV := .venv
PY := $(VENV)/bin/python
PROXY := node_modules/.bin/configurable-http-proxy
APT_PACKAGES := postgresql prometheus chromium bubblewrap
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# two workers, a test module each (module fixtures such as a module's hub stay whole): most of
# the suite waits on real hubs, so two at a time fit the 2 cores CI has
PYTEST_ARGS ?= -n 2 --dist loadfile

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup system-packages demo test lint config clean

setup: $(VENV)/.installed $(PROXY)

# deploy/install.sh is also what the compose image runs: one install, tested here.
$(VENV)/.installed $(PROXY): pyproject.toml package.json package-lock.json deploy/install.sh
	EDITABLE=1 deploy/install.sh $(VENV) test
	touch $(VENV)/.installed $(PROXY)

# Debian packages the tests use, installed only when missing (bubblewrap: autograde's sandbox).
system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! test -x /usr/bin/prometheus \
		|| ! test -x /usr/bin/promtool || ! test -x /usr/bin/chromium || ! test -x /usr/bin/bwrap; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi

demo: setup
	@echo
	@echo "  Hub:        http://127.0.0.1:8000/hub/"
	@echo "  Culler:     http://127.0.0.1:8000/services/cull/"
	@echo "  Stats:      http://127.0.0.1:8000/services/stats/"
	@echo "  Formgrader: http://127.0.0.1:8000/services/formgrader/"
	@echo "  Log in as admin (hub admin), instructor (grades course101), student1..3; password: demo"
	@echo
	@mkdir -p .demo
	cd .demo && ../$(PY) -m jupyterhub -f ../deploy/local/jupyterhub_config.py

test: setup system-packages
	$(PY) -m pytest $(PYTEST_ARGS)

# mypy reads services/ as `hubservices` through a gitignored link (pyproject's mypy_path):
# the editable install's import hook is invisible to it, and the folder is not the import name.
lint: setup
	$(VENV)/bin/ruff check .
	@mkdir -p build/typecheck && ln -sfn ../../services build/typecheck/hubservices
	$(VENV)/bin/mypy

# Print the jupyterhub_config.py lines that add the services to an existing hub.
config: setup
	@$(VENV)/bin/hubservices-config

clean:
	rm -rf $(VENV) node_modules .demo .pytest_cache .mypy_cache build
