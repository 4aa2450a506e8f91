"""The model that ships inside the package, and the model run-digit reads with by default."""
from __future__ import annotations

from pathlib import Path

import digitpipe

BUNDLED_DIR = Path(digitpipe.__file__).resolve().parent / "models"
BUNDLED_MODEL = "digits.onnx"  # with digits.report.json, detector.onnx and detector.report.json beside it
TRAINED_MODEL = Path("artifacts/digits.onnx")  # what `make train export` writes, relative to the working folder


def bundled_model() -> Path:
    """The verified digit model inside the installed package (`make bundle` puts it there)."""
    return BUNDLED_DIR / BUNDLED_MODEL


def default_model() -> Path:
    """run-digit without --model: the model trained here when there is one, else the bundled one."""
    return TRAINED_MODEL if TRAINED_MODEL.is_file() else bundled_model()
