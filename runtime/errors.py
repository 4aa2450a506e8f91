"""Errors the CLI turns into one-line messages and exit codes."""


class InputError(Exception):
    """One input (image, video, camera) cannot be read; the others may still be."""


class ModelError(Exception):
    """The model file is missing, not ONNX, or lacks what the runtime needs."""
