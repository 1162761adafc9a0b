# Gas Town: `make run` starts the product on its embedded default; `make test` runs the tests.
# Both set everything up first (virtualenv, packages, database).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
export HOST PORT

.PHONY: run test setup install migrate lint format bench clean browser-deps sandbox-deps agent-clis \
	system-deps postgres-client

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed $(VENV)/bin/gt system-deps agent-clis

# What Gas Town needs from the system besides Python and git: bubblewrap always, PostgreSQL's
# client tools (pg_dump, pg_restore: `manage.py backup` and `restore`) when DATABASE_URL is set.
system-deps: sandbox-deps $(if $(DATABASE_URL),postgres-client)

# the agents' client, on the virtualenv's PATH (one stdlib-only file: a copy is enough)
$(VENV)/bin/gt: bin/gt $(VENV)/.installed
	install -m 755 bin/gt $@

migrate: install
	$(PY) manage.py migrate --noinput

setup: migrate
	$(PY) manage.py ensure_admin

# (the launcher makes the admin login itself, and shows it with the addresses once it is ready)
run: migrate
	$(PY) -m gastown_site.run --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The agent CLIs the claude and codex presets run, pinned in package.json (docs/runner.md):
# `npm ci` into node_modules/ (agents find node_modules/.bin on their PATH; Claude Code's
# postinstall puts its native binary in place, run by hand if npm skipped it). Root installs
# Node.js and npm with apt when they are missing; anyone else is warned.
agent-clis: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
	fi
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "warning: npm is missing: the claude and codex presets cannot run here (their" \
			"tests are skipped outside CI). Install Node.js and npm, then make agent-clis."; \
	else \
		set -e; npm ci --no-audit --no-fund --loglevel=error; \
		node_modules/.bin/claude --version >/dev/null 2>&1 \
			|| node node_modules/@anthropic-ai/claude-code/install.cjs; \
		node_modules/.bin/claude --version; node_modules/.bin/codex --version; touch $@; \
	fi

# The board's browser tests drive Debian's Chromium (Playwright cannot download its own here).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

# Agents, gates and setup commands run inside bubblewrap (docs/runner.md, "Sandbox"). Root
# installs it when it is missing; anyone else is warned, and Gas Town runs unsandboxed
# (GASTOWN_SANDBOX defaults to none without bwrap, and says so at start-up and on the board).
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap) \
			|| echo "warning: could not install bubblewrap: agents will run unsandboxed"; \
		else \
			echo "warning: bubblewrap (bwrap) is not installed: agents will run unsandboxed" \
				"(GASTOWN_SANDBOX=none). Install the bubblewrap package as root."; \
		fi; \
	fi

# pg_dump and pg_restore, for backups of a PostgreSQL installation (docs/operations.md). Root
# installs Debian's postgresql-client when they are missing; anyone else is warned. The client
# must be at least as new as the server.
postgres-client:
	@if ! command -v pg_dump >/dev/null 2>&1 || ! command -v pg_restore >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-client; \
		else \
			echo "warning: pg_dump/pg_restore are not installed: manage.py backup and restore" \
				"cannot handle PostgreSQL. Install the postgresql-client package as root."; \
		fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var
