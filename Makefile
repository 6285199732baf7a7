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

# The main job end to end on a REAL model and REAL data (no download: the handwritten digits that
# scikit-learn ships): train (or load the cached) digits ResNet -> export -> eval -> optimize for a
# CPU latency budget of half its measured latency (ONNX Runtime, batch 32) -> eval the pick against
# the original -> profile both side by side; then the board path: TensorRT QDQ with real calibration
# and the Orin build command (dry run: no TensorRT here).
DIGITS := $(OUT)/digits-resnet.onnx
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/edgekit doctor || true
	$(BIN)/python examples/optimize_digits_prepare.py $(OUT)
	$(BIN)/edgekit eval $(DIGITS) --data $(OUT)/digits-test.npz --json $(OUT)/eval.json
	$(BIN)/edgekit optimize $(DIGITS) --device cpu --speedup 2 --data $(OUT)/digits-select.npz --calib $(OUT)/digits-calib.npz --batch 32 --trials 16 -o $(OUT)/optimized --json $(OUT)/optimize.json
	$(BIN)/edgekit eval $(OUT)/optimized/model.onnx --data $(OUT)/digits-test.npz --reference $(DIGITS) --json $(OUT)/eval-optimized.json
	$(BIN)/edgekit profile $(DIGITS) $(OUT)/optimized/model.onnx --device cpu --batch 32 --threads 1 --duration-s 2 --json $(OUT)/profile.json --plot $(OUT)/latency.png
	$(BIN)/edgekit quantize $(DIGITS) -o $(OUT)/digits-resnet.qdq.onnx --calib $(OUT)/digits-calib.npz --target tensorrt --json $(OUT)/quantize-trt.json
	$(BIN)/edgekit build $(OUT)/digits-resnet.qdq.onnx --device orin --dry-run

# The layers (import-linter contracts in pyproject.toml) and ruff first: an upward import fails CI.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check edgekit tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build .pytest_cache
