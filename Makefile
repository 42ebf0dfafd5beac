# shortflow: `make demo` and `make test` work on a fresh machine (Debian + Python >= 3.11).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAMPLE := datasets/samples/sample.pcap
DEBIAN_PKGS := tshark nftables dnsmasq-base tcpdump iproute2 ethtool curl iperf3 conntrack \
	chromium chromium-driver
PYTEST_ARGS ?=

.PHONY: demo test venv kernels deps-debian lint fuzz clean model

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,train,pyshark]'
	touch $@

venv: $(VENV)/.installed

# The numba kernels compiled ahead of time (classifier/compiled.py): a process then starts
# without numba's ~0.5 s of loading cached kernels. Rebuilt when a source file changes;
# without it the kernels compile just in time (same results).
KERNELS := classifier/_aot.json
$(KERNELS): $(VENV)/.installed $(shell find classifier -name '*.py')
	@$(PY) -m classifier.compiled || echo "shortflow: the kernels were not built ahead of" \
	  "time (numba.pycc needs a C compiler: apt-get install gcc); they compile on first use"

kernels: $(KERNELS)

demo: venv kernels
	$(VENV)/bin/shortflow flows $(SAMPLE) --limit 15
	$(VENV)/bin/shortflow classify $(SAMPLE)

# Debian packages the tests use (real tshark, nftables, dnsmasq); installed when run as root.
deps-debian:
	@missing=""; for c in tshark nft dnsmasq tcpdump ip ethtool curl chromium chromedriver; do \
	  command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PKGS); \
	  else echo "not root: tests needing$$missing will be skipped"; fi; \
	fi

# Tests that read the shared public captures skip (with the reason) when they are absent;
# training/shared_captures.py decides where they are ($SHORTFLOW_TEST_DATA, ../shared/pcaps).
test: venv kernels deps-debian
	@$(PY) -m training.shared_captures
	$(PY) -m pytest -q --nbmake tests notebooks $(PYTEST_ARGS)

# The shipped session model: imports the public traces (from the shared captures folder,
# see training/shared_captures.py: $SHORTFLOW_TEST_DATA, else ../shared/pcaps)
# into the cache, simulates player sessions with a fixed seed and fits the session model
# into classifier/model/default (session.joblib + session.json), printing the
# leave-one-source-out figures. The same data and seed give the same model. The number of
# simulated sessions and the seed are the CLI's defaults, which `evaluate-sessions` uses
# too, so its figures describe this model.
model: venv
	@$(PY) -m training.shared_captures
	$(VENV)/bin/shortflow dataset ensure-traces -q
	$(VENV)/bin/shortflow train-sessions datasets/public.csv \
	  $${SHORTFLOW_CACHE:-$$HOME/.cache/shortflow}/traces/traces.csv \
	  --jobs 2 -q -o classifier/model/default --name default-session

# Longer fuzzing than the bounded run in `make test` (atheris if installed, else random).
fuzz: venv
	$(PY) benchmarks/fuzz.py

lint: venv
	$(VENV)/bin/ruff check classifier training tests benchmarks
	$(VENV)/bin/ruff format --check classifier training tests benchmarks
	$(VENV)/bin/mypy classifier training

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache classifier/_aot.*
