# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Tested pins (CPU torch + matching torchvision). Users with another CUDA keep pyproject's ranges.
CONSTRAINTS := constraints.txt

.PHONY: venv test test-fast demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	$(PY) train.py task=demo
	$(PY) sample.py ckpt=outputs/demo/checkpoints/last.ckpt input=data/demo/val/LQ gt=data/demo/val/GT output=outputs/demo/restored

bench: venv
	$(PY) benchmarks/sampler_quality.py --quick
	$(PY) benchmarks/sampler_overhead.py --quick

clean:
	rm -rf $(VENV) outputs .pytest_cache
