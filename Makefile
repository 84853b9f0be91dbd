# Two commands from a fresh clone: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv train evaluate test test-all test-gpu test-browser bench lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,slurm,optuna]"
	touch $(STAMP)

# Train the glass-box model on the embedded digits dataset, then test its best checkpoint.
train: venv
	$(PY) train.py $(ARGS)
	@ls -td logs/train/runs/*/report.html 2>/dev/null | head -1 | sed 's/^/report: /'

evaluate: venv
	$(PY) evaluate.py $(ARGS)

test: venv
	WANDB_MODE=disabled $(PY) -m pytest -q $(ARGS)

test-all: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -m "slow or not slow" $(ARGS)

# The GPU tests (tests/test_gpu.py); without CUDA each is reported as skipped with the reason.
test-gpu: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -rs -m gpu $(ARGS)

# A tiny run's and a tiny sweep's report.html rendered in headless Chromium: screenshots in
# logs/browser/, failure on a console error or an image that did not load. Needs Chromium
# (Debian/Ubuntu: sudo apt-get install chromium); without it, it says so and exits with status 2.
# ARGS="path/to/report.html ..." renders those reports instead.
test-browser: venv
	WANDB_MODE=disabled $(PY) tests/browser/render_reports.py $(ARGS)

# DEVICE=cuda runs them on the GPU (make bench DEVICE=cuda)
DEVICE ?= cpu
bench: venv
	for f in benchmarks/bench_*.py; do $(PY) $$f --device $(DEVICE) || exit 1; done

lint: venv
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs multirun logs .pytest_cache
