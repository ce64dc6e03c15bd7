# procmem: `make demo` runs the main job, `make test` the whole test suite, `make bench` the benchmarks.
# Each target creates .venv and installs what it needs (PyTorch pinned to the CPU wheel 2.13.0).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-dev
DATA ?=

.PHONY: demo test bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The dev extra, plus mlx (mlx[cpu] on Linux) so the MLX embedder's tests run here too.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev,mlx]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m procmem.demo $(if $(DATA),--data "$(DATA)",)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/retrieval.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/next_action.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/scale.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/learn_session.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/scale_service.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/reliability.py

lint: $(STAMP)
	$(VENV)/bin/ruff check core langchain_procmem llamaindex_procmem

clean:
	rm -rf $(VENV) .pytest_cache
