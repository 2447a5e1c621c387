# The linter (ruff) in its own environment, .venv-lint/, built from envs/lint.lock. Included by the main Makefile,
# whose `test` target runs `lint` first; ruff's settings are in pyproject.toml ([tool.ruff]).

LINT_DEFAULT_GOAL := $(.DEFAULT_GOAL)

LINT_PYTHON ?= python3.11
LINT_VENV   := .venv-lint
LINT_BIN    := $(LINT_VENV)/bin
LINT_LOCK   := envs/lint.lock
LINT_STAMP  := $(LINT_VENV)/.installed

$(LINT_STAMP): $(LINT_LOCK)
	test -x $(LINT_BIN)/python || $(LINT_PYTHON) -m venv $(LINT_VENV)
	$(LINT_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(LINT_LOCK)
	touch $(LINT_STAMP)

.PHONY: lint
lint: $(LINT_STAMP)
	$(LINT_BIN)/ruff check flmlib tests

.DEFAULT_GOAL := $(LINT_DEFAULT_GOAL)
