"""digitpipe: read digits from photos, video and cameras with a verified ONNX model.

    import digitpipe

    reader = digitpipe.Reader()             # the bundled model; Reader("my.onnx", backend="opencv")
    reading = reader.read("photo.jpg")      # a path, or a numpy image (gray, BGR or BGRA)
    print(reading.text)                     # "2026"
    print(reading.to_dict())                # what `run-digit --json` prints for it

The pipeline's stages are subpackages: digitpipe.runtime (deployable: numpy, OpenCV,
onnxruntime; never torch), digitpipe.train and digitpipe.export (the `train` extra).
"""
from __future__ import annotations

__version__ = "0.1.0"

# The reader loads OpenCV and onnxruntime; importing digitpipe (or its training side) does not.
_API = {
    "Reader": "digitpipe.runtime.api",
    "bundled_model": "digitpipe.runtime.bundled",
    "Reading": "digitpipe.runtime.reader",
    "Digit": "digitpipe.runtime.reader",
    "InputError": "digitpipe.runtime.errors",
    "ModelError": "digitpipe.runtime.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'digitpipe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
