# make help lists the targets. Every target that needs Python depends on setup,
# so a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-unit lint format data train evaluate bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv with the pinned packages and mnist_lib (editable); re-runs only when the pins change

test: lint test-unit ## the whole test suite: lint, then unit tests (what CI runs)

test-unit: setup ## unit tests (pytest tests/)
	$(PY) -m pytest -q

lint: setup ## ruff check and format check
	$(VENV)/bin/ruff check mnist_lib tests benchmarks
	$(VENV)/bin/ruff format --check mnist_lib tests benchmarks

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix mnist_lib tests benchmarks
	$(VENV)/bin/ruff format mnist_lib tests benchmarks

data: setup ## verify (or download) MNIST and print the split
	$(PY) -m mnist_lib data

train: setup ## train the reference MLP (25 epochs) into results/runs/<timestamp>; TRAIN_ARGS="--epochs 5" to change
	$(PY) -m mnist_lib train $(TRAIN_ARGS)

evaluate: setup ## evaluate a finished run on the test set: make evaluate RUN=results/runs/NAME
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=results/runs/NAME" >&2; exit 2; }
	$(PY) -m mnist_lib evaluate $(RUN)

bench: setup ## epoch time of mnist_lib vs a torchvision-style pipeline (benchmarks/epoch_speed.py)
	$(PY) benchmarks/epoch_speed.py

clean: ## remove the virtual environment and caches (keeps data and results)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
