# digitpipe: `make train export`, then `run-digit --image photo.png` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRAIN_ARGS  ?=
DETECTOR_ARGS ?=
SEQUENCE_ARGS ?=
EXPORT_ARGS ?=
TEST_ARGS   ?=

.PHONY: setup system-packages train export bundle wheel check test test-fast bench demo clean help
help:
	@echo "make setup   create $(VENV) with torch $(TORCH) and everything else"
	@echo "make train   train the digit CNN, the ink detector and the sequence reader -> artifacts/digits.pt, detector.pt, sequence.pt (TRAIN_ARGS=, DETECTOR_ARGS=, SEQUENCE_ARGS=)"
	@echo "make export  export + verify -> artifacts/digits.onnx, digits.int8.onnx, detector.onnx, detector.int8.onnx, sequence.onnx, reports"
	@echo "make bundle  put the verified artifacts/digits.onnx (+ detector, sequence reader) inside the package: digitpipe/models/"
	@echo "make wheel   build the installable wheel -> dist/"
	@echo "make check   whole test set: PyTorch vs both runtimes on the float and INT8 files"
	@echo "make test    the whole test suite, end-to-end cases included (installs the system packages it uses)"
	@echo "make bench   benchmarks, printed and written to artifacts/bench.json"
	@echo "make demo    read a generated photo of a number with run-digit"

TORCH := torch==2.14.1 torchvision==0.29.1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	touch $(STAMP)

setup: $(STAMP)

# The detector's real photographs (train/real_photos.py): installed when root allows, else
# it trains on generated backgrounds alone and says so.
train: $(STAMP)
	$(BIN)/python -m digitpipe.train.real_photos install
	$(BIN)/python -m digitpipe.train $(TRAIN_ARGS)
	$(BIN)/python -m digitpipe.train.detector $(DETECTOR_ARGS)
	$(BIN)/python -m digitpipe.train.sequence $(SEQUENCE_ARGS)

export: $(STAMP)
	$(BIN)/python -m digitpipe.export $(EXPORT_ARGS)
	$(BIN)/python -m digitpipe.export.detector
	$(BIN)/python -m digitpipe.export.sequence

bundle: $(STAMP)
	$(BIN)/python -m digitpipe.export.bundle

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -w dist .

check: $(STAMP)
	$(BIN)/python -m digitpipe.export.check --model artifacts/digits.onnx
	$(BIN)/python -m digitpipe.export.check --model artifacts/digits.int8.onnx

# The Debian packages the tests use (tests/system_packages.py): installed when root or
# passwordless sudo allows; otherwise the tests that need them are skipped, saying why.
system-packages:
	$(PYTHON) tests/system_packages.py install

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(TEST_ARGS)

test-fast: $(STAMP) system-packages
	$(BIN)/python -m pytest -m "not slow" $(TEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

demo: $(STAMP)
	$(BIN)/python -m bench.make_photo artifacts/demo-number.png 2026
	$(BIN)/run-digit --image artifacts/demo-number.png --no-window

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
