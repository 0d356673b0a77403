# The two commands of the README. Both create or refresh .venv and install everything.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
STAMP   := $(VENV)/.afpbench-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test lint check install clean

install: $(STAMP)

# torch + torchvision first, pinned as a pair (constraints.txt); torchattacks without its
# deps, because it pins requests~=2.25 and would downgrade the hub client's requests.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[ml,dev]'
	$(PIP) install -q -c constraints.txt --no-deps torchattacks==3.5.1 open_clip_torch==3.3.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/afpbench demo --out demo-out

check: $(STAMP)
	$(BIN)/afpbench demo --check --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# ruff, configured in pyproject.toml ([tool.ruff]); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out
