# Two commands for a fresh machine (see README):  make demo   and   make test
# Each creates .venv and installs what it needs; torch is pinned to the CPU wheel through constraints.txt.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
OUT ?= build/demo

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[torch,plot,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/edgekit doctor
	$(BIN)/edgekit devices
	$(BIN)/edgekit export resnet18 -o $(OUT)/resnet18.onnx --json $(OUT)/export.json
	$(BIN)/edgekit profile $(OUT)/resnet18.onnx --device cpu --duration-s 2 --json $(OUT)/profile.json --plot $(OUT)/latency.png

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build .pytest_cache
