"""Errors the CLI turns into one-line messages and exit codes."""


class InputError(Exception):
    """One input (image, video, camera) cannot be read; the others may still be."""


class ModelError(Exception):
    """The model file is missing, not ONNX, or lacks what the runtime needs."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)[:300]
