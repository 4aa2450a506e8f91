"""Console scripts of the training side (digitpipe-train, -export, -check).

They are installed with the base package too, where torch is not: rather than a traceback
from the first import, they say in one line which extra to install. Imports nothing heavy
itself.
"""
from __future__ import annotations

import importlib
import sys

# What `pip install digitpipe[train]` brings (pyproject.toml's train extra).
TRAIN_EXTRA = {"torch", "torchvision", "onnx", "onnxscript", "tqdm", "matplotlib", "tensorboard"}


def _run(script: str, target: str) -> int:
    module, func = target.split(":")
    try:
        main = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in TRAIN_EXTRA:
            raise
        print(f"error: {script} needs {missing}, which comes with the training extra: "
              f"pip install 'digitpipe[train]'", file=sys.stderr)
        return 2
    return main()


def train() -> int:
    return _run("digitpipe-train", "digitpipe.train.cli:main")


def export() -> int:
    return _run("digitpipe-export", "digitpipe.export.cli:main")


def check() -> int:
    return _run("digitpipe-check", "digitpipe.export.check:main")


def train_detector() -> int:
    return _run("digitpipe-train-detector", "digitpipe.train.detector:main")


def export_detector() -> int:
    return _run("digitpipe-export-detector", "digitpipe.export.detector:main")


def train_sequence() -> int:
    return _run("digitpipe-train-sequence", "digitpipe.train.sequence:main")


def export_sequence() -> int:
    return _run("digitpipe-export-sequence", "digitpipe.export.sequence:main")
