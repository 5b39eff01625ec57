# One entry point for people and CI. `make demo` and `make test` work on a fresh Debian machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test soak mutation lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,docs]'
	touch $(STAMP)

setup: $(STAMP)

## The main job on the bundled data, as a dry run: the week of the shipped seminar (2024-01-18).
demo: setup
	$(BIN)/seminar-mailer check
	$(BIN)/seminar-mailer preview --date 2024-01-15 > /dev/null
	$(BIN)/seminar-mailer send --dry-run --date 2024-01-15

## Debian packages the tests talk to (chromium, ...). Needs root or sudo.
system-deps:
	scripts/install-system-deps

test: system-deps setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

## The lifecycle simulation for as long as SIM_SECONDS allows (default an hour), from SIM_SEED: histories,
## steps, seeds and any minimal failing history are printed, each violation as soon as it is found and a progress
## line per worker every SIM_PROGRESS (100) histories. (`make test` runs 200 histories and 12 with kills.)
SIM_SECONDS ?= 3600
soak: setup
	SIM_SECONDS=$(SIM_SECONDS) $(BIN)/pytest -q -s tests/test_simulation.py -k soak

## Mutation testing of plan, ledger, recipients and dispatch (scripts/mutation.py): one change at a time, the
## tests run in a private copy; survivors are listed, equivalent ones are in scripts/mutation_equivalent.txt.
## MUTATION_ARGS="--modules plan --sample 50" for a part. Hours for all of them on 2 cores.
MUTATION_ARGS ?= --jobs 2
mutation: system-deps setup
	$(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

## Benchmarks against mailmerge, smtplib, Postfix's smtp-source and smtp-sink: bench/results/latest.md
bench: system-deps setup
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check mailer tests scripts bench
	$(BIN)/mypy
	$(BIN)/mypy scripts/docs_reference.py

## ruff and mypy strict (lint, above) are clean, and .ci/run keeps them so.
## The manual (docs/, mkdocs.yml) into build/site/; --strict: a broken link, anchor or nav entry fails.
## Live while you edit: .venv/bin/mkdocs serve (http://127.0.0.1:8000/).
.PHONY: docs
docs: setup
	$(BIN)/python scripts/docs_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) preview state tests/artefacts .pytest_cache .mypy_cache .ruff_cache *.egg-info
