"""A deployed model: one ONNX file, its metadata, a backend, and the verb classify()."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends import BACKENDS
from runtime.errors import ModelError
from runtime.foreign import Overrides, describe
from runtime.metadata import ModelInfo
from runtime.onnx_props import read_model_summary
from runtime.preprocess import blob_params, to_blob


class Model:
    def __init__(self, path: str | Path, backend: str = "onnxruntime", device: str = "auto", threads: int = 0,
                 overrides: Overrides = Overrides(), check_report: Path | bool = False):
        """check_report: True checks the bytes against the export report beside the file, a Path against that one."""
        self.path = Path(path)
        data = _read_model_bytes(self.path)
        if check_report:
            from runtime.integrity import check_against_report  # hashlib costs start-up time; only when asked

            check_against_report(self.path, data, None if check_report is True else Path(check_report))
        try:
            props, inputs, outputs = read_model_summary(data)
            self.info: ModelInfo = describe(props, inputs, outputs, overrides)
            check_input_matches(self.info, inputs)
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        try:
            self.backend = BACKENDS[backend](data, self.info, device, threads)
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        self.params = blob_params(self.info.preprocess)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def blob(self, tiles: list[np.ndarray]) -> np.ndarray:
        return to_blob(tiles, self.params)

    def logits(self, blob: np.ndarray) -> np.ndarray:
        """Logits for a blob of any batch size (split into single runs for a fixed batch of 1)."""
        fixed = self.info.fixed_batch
        if fixed is not None and blob.shape[0] != fixed:
            if fixed != 1:
                raise ModelError(f"{self.path}: fixed batch {fixed} cannot take {blob.shape[0]} images")
            return np.concatenate([self.backend.run(blob[i : i + 1]) for i in range(blob.shape[0])])
        return self.backend.run(blob)

    def classify(self, tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, softmax confidences) for uint8 tiles at the input size."""
        if not tiles:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        logits = self.logits(self.blob(tiles)).astype(np.float32)
        probs = softmax(logits)
        best = probs.argmax(axis=1)
        return best, probs[np.arange(len(best)), best]


def check_input_matches(info: ModelInfo, inputs: dict[str, tuple]) -> None:
    """The graph must take the input the metadata describes: same name, C, H and W."""
    if info.input_name not in inputs:
        raise ModelError(f"the graph has no input {info.input_name!r} (it has {', '.join(inputs) or 'none'})")
    shape = inputs[info.input_name]
    fixed_differ = any(isinstance(g, int) and g != m for g, m in zip(shape[1:], info.input_shape[1:]))
    if len(shape) != 4 or fixed_differ:  # a named (dynamic) dimension takes any size
        raise ModelError(f"the graph input {info.input_name!r} has shape {list(shape)}, "
                         f"the metadata says {list(info.input_shape)}")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _read_model_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"{path}: no such model file (create it with `make train export`)")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not an ONNX file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror})") from None
    if not data:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    return data
