# The two set-up commands: `make demo` and `make test`. Both create or reuse .venv
# and install exactly the pinned versions; a second run installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.refute-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing refute and its pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) -m refute demo

test: $(STAMP)
	@$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
