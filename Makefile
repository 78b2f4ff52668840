# linreg_exp: `make run` trains the default experiment, `make test` runs the whole suite.
# Both create .venv (Python 3.11) and install the pinned versions in constraints.txt.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000
STORE  ?= sqlite:///$(CURDIR)/mlflow.db
ARTIFACTS ?= $(CURDIR)/mlruns
SERVER_DIR ?= $(CURDIR)/mlflow-server
ARGS   ?=
PYTEST_ARGS ?= --durations=15
APT_PACKAGES := chromium chromium-driver postgresql-15

.PHONY: run test install install-dev system-deps lint bench ui dashboard server pictures clean

# The venv's own pip (Python 3.11's, 23.2) is first upgraded to the pinned one: its resolver
# spends most of an install evaluating every file each index lists (39 s of pip here; 22 s with
# 26.3, whose upgrade takes 1.5 s). pip byte-compiles what it installs one file at a time (about
# 40 s on 2 cores); compileall does the same on every core (PIP_COMPILE, half the wall time),
# leaving out the packages' own test suites (28% of the bytes; nothing imports them, and a module
# without a .pyc is still compiled when imported). Its exit status is ignored, as pip ignores the
# same failures: torch ships a test file only Python 3.12 can read.
PIP_UPGRADE = $(BIN)/python -m pip install --quiet -c constraints.txt --upgrade pip
PIP_INSTALL = $(BIN)/pip install --quiet --no-compile -c constraints.txt
PIP_COMPILE = $(BIN)/python -m compileall -q -j 0 -x 'site-packages/.*/tests?/' \
	"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	> /dev/null || true
# The project's own modules, installed in place (-e), are compiled too, and again before each
# test run (only what changed): with PYTHONDONTWRITEBYTECODE set, as on this machine, Python
# would compile them afresh in every process it starts, about 0.2 s of CPU each (some 190
# processes in a test run). A file edited later is recompiled in memory until then, as before.
OWN_COMPILE = $(BIN)/python -m compileall -q -j 0 linreg_exp hydra_plugins tests benchmarks > /dev/null

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_UPGRADE)
	$(PIP_INSTALL) -e '.[sweep,server]'
	$(PIP_COMPILE)
	$(OWN_COMPILE)
	touch $@

# the dev install is one pip run of its own (not the run install, then dev on top: one resolve)
$(BIN)/.installed-dev: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_UPGRADE)
	$(PIP_INSTALL) -e '.[dev,sweep,server]'
	$(PIP_COMPILE)
	$(OWN_COMPILE)
	touch $(BIN)/.installed $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

## run: train the default experiment (add overrides with ARGS="optimizer.lr=0.1 loss=mse")
run: install
	$(BIN)/python -m linreg_exp $(ARGS)
	@echo
	@echo "Look at: outputs/runs/ (plots and the job log), and the MLflow UI: make ui -> http://$(HOST):$(PORT)"

## test: the whole suite, browser and PostgreSQL tests included, on 4 pytest-xdist workers (most
## tests wait on subprocesses and servers; a module sharing a server or cluster stays on one
## worker: tests/conftest.py; 4 workers: 6:15 to 6:20 of pytest from a fresh clone, 7:40
## beside two CPU burners, 9:00 with the install: docs/development.md);
## XDIST= runs it in this process
XDIST ?= -n 4 --dist loadgroup
test: install-dev system-deps
	$(OWN_COMPILE)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

## system-deps: Debian's chromium (browser test), PostgreSQL 15 (server test) and SLURM with
## accounting (tests/slurm.py: slurmctld slurmd slurmdbd munge mariadb), if missing
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium chromium-driver"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql-15"; \
	for f in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged \
	  /usr/sbin/slurmdbd /usr/sbin/mariadbd /usr/bin/mariadb-install-db; do \
	  [ -x $$f ] || { missing="$$missing slurmctld slurmd slurm-client munge slurmdbd mariadb-server"; break; }; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing with apt-get:$$missing"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: install-dev
	$(BIN)/ruff check linreg_exp tests benchmarks docs
	$(BIN)/ruff format --check linreg_exp tests benchmarks docs
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: framework overhead against the bare tutorial script (writes benchmarks/results.md);
## Q=batched runs one question (or several: Q=startup,memory): loop minibatch logging startup
## sweeps stopping memory batched tables pruning optuna servers; BENCH_ARGS=--quick for fewer
## repetitions, smaller sizes
Q ?=
BENCH_ARGS ?=
bench: install-dev
	$(BIN)/python benchmarks/bench.py $(if $(Q),--only $(Q)) $(BENCH_ARGS)

## dashboard: optuna-dashboard (the [dashboard] extra) on an Optuna search's study, at
## http://$(HOST):$(DASHBOARD_PORT): make dashboard SWEEP=outputs/multirun/DAY/TIME (its sweep dir;
## default: the newest one holding a study), or OPTUNA_STORAGE=postgresql+psycopg2://... for a
## study kept in a database, OPTUNA_STORAGE=<sweep dir>/optuna.log for a journal file
## (hydra.sweeper.storage)
SWEEP ?= $(patsubst %/optuna.db,%,$(firstword $(shell ls -t outputs/multirun/*/*/optuna.db 2>/dev/null)))
OPTUNA_STORAGE ?= sqlite:///$(abspath $(SWEEP))/optuna.db
DASHBOARD_PORT ?= 8080
$(BIN)/.installed-dashboard: $(BIN)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[sweep,server,dashboard]'
	touch $@
dashboard: $(BIN)/.installed-dashboard
	@case "$(OPTUNA_STORAGE)" in sqlite:///*) [ -f "$(OPTUNA_STORAGE:sqlite:///%=%)" ] || { \
	  echo "no Optuna study at $(OPTUNA_STORAGE:sqlite:///%=%): make dashboard SWEEP=<an Optuna search's sweep dir>"; exit 2; };; esac
	$(BIN)/optuna-dashboard '$(OPTUNA_STORAGE)' --host $(HOST) --port $(DASHBOARD_PORT)

## ui: browse ./mlflow.db (and its artifacts) at http://$(HOST):$(PORT)
ui: install
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --default-artifact-root $(ARTIFACTS) \
	  --host $(HOST) --port $(PORT) --workers 1

## server: a tracking server for several machines; runs log with MLFLOW_TRACKING_URI=http://HOST:PORT
server: install
	mkdir -p $(SERVER_DIR)
	$(BIN)/mlflow server --backend-store-uri $${BACKEND_STORE_URI:-sqlite:///$(SERVER_DIR)/mlflow.db} \
	  --artifacts-destination $(SERVER_DIR)/artifacts --serve-artifacts \
	  --host $(HOST) --port $(PORT) --workers 1

## pictures: regenerate the README's images from a real run and sweep
pictures: install-dev system-deps
	$(BIN)/python docs/make_pictures.py

clean:
	rm -rf outputs/runs outputs/multirun .pytest_cache .mypy_cache .ruff_cache
