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

# The main job end to end on the embedded default (ONNX Runtime, CPU): export -> prune -> quantize
# (TensorRT QDQ + CPU INT8) -> check -> the board's build command (dry run) -> profile side by side.
# No image data can be downloaded here, so calibration uses --calib synthetic (edgekit warns about it).
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/edgekit doctor || true
	$(BIN)/edgekit devices
	$(BIN)/edgekit export resnet18 -o $(OUT)/resnet18.onnx --dynamic-batch --json $(OUT)/export.json
	$(BIN)/edgekit prune $(OUT)/resnet18.onnx -o $(OUT)/resnet18.pruned.onnx --flops-target 0.5 --round-to 8 --json $(OUT)/prune.json
	$(BIN)/edgekit quantize $(OUT)/resnet18.pruned.onnx -o $(OUT)/resnet18.pruned.qdq.onnx --calib synthetic --samples 32 --target tensorrt --json $(OUT)/quantize-trt.json
	$(BIN)/edgekit inspect qdq $(OUT)/resnet18.pruned.qdq.onnx
	$(BIN)/edgekit quantize $(OUT)/resnet18.pruned.onnx -o $(OUT)/resnet18.pruned.int8.onnx --calib synthetic --samples 32 --target cpu --method minmax --json $(OUT)/quantize-cpu.json
	$(BIN)/edgekit build $(OUT)/resnet18.pruned.qdq.onnx --device orin --dry-run
	$(BIN)/edgekit profile $(OUT)/resnet18.onnx $(OUT)/resnet18.pruned.onnx $(OUT)/resnet18.pruned.int8.onnx --device cpu --duration-s 3 --json $(OUT)/profile.json --plot $(OUT)/latency.png

# The layers (import-linter contracts in pyproject.toml) and ruff first: an upward import fails CI.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check edgekit tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build .pytest_cache
