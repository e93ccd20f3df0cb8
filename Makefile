# mlqueue — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_HOME ?= $(CURDIR)/.mlqueue-demo
STAMP := $(VENV)/.installed

.PHONY: install run stop test bench chaos lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[ml,test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install mlqueue with everything it needs

run: $(STAMP) ## start the HQ + a local worker, run the demo, print where to look
	$(PY) -m mlqueue.demo --home $(DEMO_HOME)

stop: ## stop what `make run` started
	-$(PY) -m mlqueue.demo --home $(DEMO_HOME) --stop

/usr/bin/chromium: ## Debian's chromium, which the dashboard tests drive (Playwright never downloads a browser)
	apt-get update && apt-get install -y chromium

/usr/sbin/sshd: ## Debian's OpenSSH server: the `machines add` test logs in to it on a loopback port
	apt-get update && apt-get install -y openssh-server

/usr/sbin/rabbitmq-server: ## Debian's RabbitMQ: tests/test_rabbitmq_broker.py starts its own throwaway node on free ports
	apt-get update && apt-get install -y rabbitmq-server
	-systemctl disable --now rabbitmq-server epmd.socket 2>/dev/null || service rabbitmq-server stop 2>/dev/null
	-epmd -kill >/dev/null 2>&1  # the installer's port mapper; epmd refuses if a node still uses it

test: $(STAMP) /usr/bin/chromium /usr/sbin/sshd /usr/sbin/rabbitmq-server ## the whole test suite against real servers and workers
	$(PY) -m pytest -q -n 2 --dist loadfile  # two files at a time: most of a test is waiting on workers

screenshots: $(STAMP) /usr/bin/chromium ## retake docs/screenshots: every dashboard page at 1280x800 (tests/test_dashboard_tour.py)
	MLQUEUE_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_dashboard_tour.py

bench: $(STAMP) /usr/bin/chromium ## benchmarks (long); figures are printed and saved in bench/results/
	$(PY) bench/throughput.py
	$(PY) bench/store_ops.py
	$(PY) bench/submit_batch.py
	$(PY) bench/order_update.py
	$(PY) bench/history_growth.py
	$(PY) bench/idle_workers.py
	$(PY) bench/nn_throughput.py
	$(PY) bench/dataset_cache.py
	$(PY) bench/live_log.py
	$(PY) bench/api_latency.py
	$(PY) bench/dashboard_render.py
	$(PY) bench/sweep_efficiency.py
	$(PY) bench/checkpoint_overhead.py
	$(PY) bench/owner_reaction.py
	$(PY) bench/placement.py

chaos: $(STAMP) ## the chaos suite: every fault at full size, the tally printed and saved (see docs/reliability.md)
	$(PY) -m chaos --json bench/results/chaos.json

lint: $(STAMP)
	$(VENV)/bin/ruff check mlqueue ml_scripts tests bench

clean: stop
	rm -rf $(VENV) $(DEMO_HOME) *.egg-info
