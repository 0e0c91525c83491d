# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Tested pins (CPU torch + matching torchvision). Users with another CUDA keep pyproject's ranges.
CONSTRAINTS := constraints.txt

# The app's browser test (tests/test_app.py) drives Debian's chromium through Playwright: no browser download.
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv browser test test-fast demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test,daclip,app]"
	touch $@

# Installs chromium where it is missing and we are root (CI); elsewhere the browser test skips with the reason.
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the app's browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "warning: could not install chromium; the browser test skips (fails under CI=true)"; \
	else \
		echo "note: no $(CHROMIUM) and not root: the app's browser test skips (as root: apt-get install -y chromium)"; \
	fi

# One intra-op thread per process: the suite runs several processes at once (DDP ranks, train.py
# subprocesses), and more threads than cores slows small CPU convolutions down many-fold.
# TEST_WORKERS pytest-xdist workers (one per core of the 2-core CI machine): the whole suite took
# 9 min 10 s in one process and 4 min 35 s with 2 workers on it (2026-12-03); TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2

test: venv browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) tests

test-fast: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

# configs/task/demo.yaml holds the demo's settings; overwrite=true lets `make demo` run again in place.
# One intra-op thread: on a 2-core machine the loader worker takes the other core, and more threads
# than free cores slow small CPU convolutions down several-fold. Raise it on bigger machines.
DEMO_THREADS ?= 1

# The demo fine-tunes the shipped Rain100H derainer on the embedded rain set (configs/task/demo.yaml).
DEMO_INIT ?= checkpoints/mrlight-derain-rain100h-cpu.ckpt

demo: venv
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) train.py task=demo overwrite=true init_from=$(DEMO_INIT)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) sample.py ckpt=outputs/demo/checkpoints/last.ckpt input=data/demo/val/LQ gt=data/demo/val/GT \
		output=outputs/demo/restored lpips=false
	@echo ""
	@echo "demo done: checkpoint outputs/demo/checkpoints/last.ckpt, restored images outputs/demo/restored/,"
	@echo "validation panels outputs/demo/images/val/, W&B run outputs/demo/wandb/ (offline: wandb sync it)"

bench: venv
	$(PY) benchmarks/sampler_quality.py --quick
	$(PY) benchmarks/sampler_overhead.py --quick

clean:
	rm -rf $(VENV) outputs .pytest_cache
