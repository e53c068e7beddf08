# Two entry points that do all set-up on a fresh machine:
#   make demo   create .venv, install, train the MNIST LeNet once, run a real fooling search
#   make test   same set-up, then lint, format check and the test suite (which builds the docs strictly)
#   make docs   the documentation site, into build/site (offline)
#   make cli-page  docs/cli.md's command reference, written again from the parser
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/mnist-direct-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test lint docs cli-page bench clean-venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/pip install --quiet -e ".[test,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fooling train --model mnist-lenet
	$(BIN)/fooling evolve --model mnist-lenet --encoding direct --generations 200 --population 200 \
		--seed 0 --checkpoint-every 50 --out $(DEMO_OUT)
	@echo "images: $(DEMO_OUT)/elites.png  $(DEMO_OUT)/progress.png  checkpoint: $(DEMO_OUT)/checkpoints/"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "site: build/site/index.html"

cli-page: $(STAMP)
	$(BIN)/python docs/_hooks/reference.py
	@echo "docs/cli.md: written from the parser"

bench: $(STAMP)
	$(BIN)/python scripts/bench_mnist.py

clean-venv:
	rm -rf $(VENV)
