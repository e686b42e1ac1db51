# make help lists the targets. Every target that needs Python depends on setup,
# so a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-unit test-fast test-notebooks lint format data train evaluate notebooks reproduce lab sweep bench bench-sweep bench-scaling bench-augment bench-precision bench-population gpu-pack gpu-check bench-gpu browser-deps screenshot results records ablations mutate fuzz clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv with the pinned packages and mnist_lib (editable); re-runs only when the pins change

test: lint test-unit test-notebooks ## the whole test suite: lint, unit tests, notebooks (what CI runs)

test-unit: setup ## unit tests (pytest tests/), less the ones marked gpu (make gpu-check runs those)
	$(PY) -m pytest -q -m "not gpu"

test-fast: setup ## for the edit loop: the unit tests less the slow ones (CLI processes, sweeps, notebooks, browser, PostgreSQL), ~1.5 min
	$(PY) -m pytest -q -m "not gpu and not slow"

# --nbval-lax: only cells marked "# NBVAL_CHECK_OUTPUT" are compared (split sizes, class counts,
# config echo, parameter count, rounded summaries); every other cell must merely run without error.
# Opting in per cell keeps timings, progress bars and figures out of the comparison without a
# sanitize rule for each; the sanitize file covers addresses, timestamps and figure sizes in the
# checked cells. Results and figures go to a scratch folder, so the committed ones stay untouched.
test-notebooks: setup ## nbval over the executed notebooks in results/notebooks/ (re-runs them, output to a scratch dir)
	@scratch=$$(mktemp -d); \
	MNIST_RESULTS_DIR=$$scratch/results MNIST_FIGURES_DIR=$$scratch/figures \
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg results/notebooks/; \
	status=$$?; rm -rf $$scratch; exit $$status

lint: setup ## ruff check and format check
	$(VENV)/bin/ruff check mnist_lib tests benchmarks tools
	$(VENV)/bin/ruff format --check mnist_lib tests benchmarks tools

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix mnist_lib tests benchmarks tools
	$(VENV)/bin/ruff format mnist_lib tests benchmarks tools

fuzz: setup ## the fuzz tests with a long randomized hunt (5000 examples per parser, ~3 min) instead of make test's fixed 150
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# mutmut copies the package and tests into mutants/ and runs, for each mutant, the tests that reach the mutated
# function ([tool.mutmut] in pyproject.toml lists the core modules and the test files); results are cached there
mutate: setup ## mutation testing of the core modules (mutmut, hours on 2 cores; data variables as for make test), score and survivors into results/mutation/
	$(VENV)/bin/mutmut run
	$(PY) tools/mutation_report.py --out results/mutation

data: setup ## verify (or download) MNIST and print the split
	$(PY) -m mnist_lib data

train: setup ## train the reference MLP (25 epochs) into results/runs/<timestamp>; TRAIN_ARGS="--epochs 5" to change
	$(PY) -m mnist_lib train $(TRAIN_ARGS)

evaluate: setup ## evaluate a finished run on the test set: make evaluate RUN=results/runs/NAME
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=results/runs/NAME" >&2; exit 2; }
	$(PY) -m mnist_lib evaluate $(RUN)

notebooks: setup ## run the notebooks of notebooks/params/*.yaml with papermill into results/notebooks/ (NOTEBOOK_ARGS=--overwrite to replace)
	$(PY) -m mnist_lib notebooks $(NOTEBOOK_ARGS)

reproduce: setup ## verify the data, then re-run every notebook: replaces results/notebooks, final, runs/reference, sweeps/smoke, figures
	$(PY) -m mnist_lib data
	$(PY) -m mnist_lib notebooks --overwrite

lab: setup ## JupyterLab on notebooks/ with this environment's python3 kernel (LAB_ARGS="--no-browser" etc.)
	JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH} $(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

results: setup ## train and test configs/*.json over seeds 0-2 (notebooks/params/results/) into results/configs/, ~16 min; OVERWRITE=1 replaces
	$(PY) -m mnist_lib notebooks notebooks/params/results/*.yaml --output-dir results/configs $(if $(OVERWRITE),--overwrite)

records: setup ## time-to-accuracy records (notebooks/params/records/): 10 seeds per recipe on 2 CPU threads, ~7 min; OVERWRITE=1 replaces
	$(PY) -m mnist_lib notebooks notebooks/params/records/*.yaml --output-dir results/records/notebooks $(if $(OVERWRITE),--overwrite)

ABLATE = $(PY) -m mnist_lib train --config configs/mlp_aug.json --seeds 0 1 2 --threads 2 --device cpu
NO_AFFINE = --aug-rotate 0 --aug-scale 0 --aug-shear 0 --aug-translate 0
ablations: setup ## what mlp_aug's augmentation buys: without it, affine only, elastic only; 3 seeds, validation only, ~25 min
	$(ABLATE) $(NO_AFFINE) --aug-elastic-alpha 0 --run-dir results/ablations/no_augmentation
	$(ABLATE) --aug-elastic-alpha 0 --run-dir results/ablations/affine_only
	$(ABLATE) $(NO_AFFINE) --run-dir results/ablations/elastic_only

sweep: setup ## run or resume a sweep: make sweep SWEEP=sweeps/reference.yaml (default: sweeps/smoke.yaml)
	$(PY) -m mnist_lib sweep $(or $(SWEEP),sweeps/smoke.yaml)

bench-sweep: setup ## sweep throughput: 2 workers x 1 thread vs 1 x 2 threads, and papermill overhead
	$(PY) benchmarks/sweep_throughput.py --trials 4 --epochs 5 --out results/benchmarks/sweep_throughput.jsonl

bench: setup ## roofline: GEMM-only vs real epoch (fp32, bf16) vs torchvision-style, ~2 min
	$(PY) benchmarks/roofline.py --threads 2 --rounds 7 --csv results/benchmarks/roofline.csv

bench-scaling: setup ## epoch time vs batch size (64-1024) and threads (1, 2), with a plot, ~4 min
	$(PY) benchmarks/epoch_speed.py --rounds 3 --csv results/benchmarks/epoch_speed.csv --figure figures/performance/epoch_time.png

bench-augment: setup ## epoch time with affine + elastic augmentation vs without, fp32 and bf16, ~2 min
	$(PY) benchmarks/augment_cost.py --rounds 5 --csv results/benchmarks/augment_cost.csv

bench-precision: setup ## fp32 vs bf16: 25-epoch runs over seeds 0-2, val accuracy and wall time, ~5 min
	$(PY) benchmarks/precision.py --seeds 0 1 2 --csv results/benchmarks/precision.csv

bench-population: setup ## populations of 2, 4, 8 models side by side vs single runs, per model, on this CPU, ~2 min
	$(PY) benchmarks/population.py --rounds 3 --csv results/benchmarks/population_cpu.csv

gpu-pack: setup ## before a GPU session, here: MNIST and the sweep's wheels into .gpu/ (git-ignored; the device tool carries it)
	tools/gpu_pack.sh

gpu-check: ## on the GPU machine, no venv: tests/test_gpu.py, then benchmarks/gpu.py into results/benchmarks/gpu.csv; <= 8 min
	tools/gpu_check.sh

bench-gpu: setup ## on a CUDA machine: 25-epoch reference eager vs CUDA graph, populations of 1/8/64, DataLoader peer, reference sweep
	$(PY) benchmarks/gpu.py --sweep --csv results/benchmarks/gpu.csv

browser-deps: ## what the browser test needs: Debian's chromium (apt) and playwright-core (npm ci in tests/browser)
	@[ -x /usr/bin/chromium ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	npm ci --prefix tests/browser --no-audit --no-fund --silent

screenshot: setup browser-deps ## redraw figures/play.png: the browser test draws a one in 06_play.ipynb and keeps its screenshot
	MNIST_SCREENSHOT=figures/play.png $(PY) -m pytest -q -p no:cacheprovider tests/test_browser.py

clean: ## remove the virtual environment and caches (keeps data and results)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
