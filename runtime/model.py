"""A deployed model: one ONNX file, its metadata, a backend, and the verb classify()."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.backends import BACKENDS
from digitpipe.runtime.errors import ModelError, first_line
from digitpipe.runtime.foreign import Overrides, describe
from digitpipe.runtime.metadata import MAX_BATCH, ModelInfo
from digitpipe.runtime.onnx_props import read_model_summary
from digitpipe.runtime.preprocess import blob_params, to_blob


DEFAULT_MAX_MODEL_PIXELS = 2048 * 2048  # input width x height (x a fixed batch) a file may declare
RUN_BYTES = 64 << 20  # the largest input blob of one inference run; more tiles run in chunks


class Model:
    def __init__(self, path: str | Path, backend: str = "onnxruntime", device: str = "auto", threads: int = 0,
                 overrides: Overrides = Overrides(), check_report: Path | bool = False,
                 max_input_pixels: int = DEFAULT_MAX_MODEL_PIXELS):
        """check_report: True checks the bytes against the export report beside the file, a Path against that one.

        Everything the file declares is checked before a backend sees it (metadata, the names
        it uses against the graph, the input size against max_input_pixels); a backend that
        refuses the file, or fails at inference, raises ModelError naming it."""
        self.path = Path(path)
        data = _read_model_bytes(self.path)
        if check_report:
            from digitpipe.runtime.integrity import check_against_report  # hashlib costs start-up time; only when asked

            check_against_report(self.path, data, None if check_report is True else Path(check_report))
        try:
            props, inputs, outputs = read_model_summary(data)
            self.info: ModelInfo = describe(props, inputs, outputs, overrides)
            check_input_matches(self.info, inputs)
            check_output_matches(self.info, outputs)
            check_input_size(self.info, max_input_pixels)
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        try:
            self.backend = BACKENDS[backend](data, self.info, device, threads)
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        self.params = blob_params(self.info.preprocess)
        pp = self.info.preprocess
        self.tiles_per_run = self.info.fixed_batch or max(1, RUN_BYTES // (4 * pp.channels * pp.width * pp.height))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def blob(self, tiles: list[np.ndarray]) -> np.ndarray:
        try:
            return to_blob(tiles, self.params)
        except (cv2.error, MemoryError) as exc:
            raise ModelError(f"{self.path}: cannot build its input ({first_line(exc)})") from None

    def logits(self, blob: np.ndarray) -> np.ndarray:
        """Logits for a blob of any batch size: a fixed batch runs in runs of that size, the last padded."""
        fixed = self.info.fixed_batch
        if fixed is None or blob.shape[0] == fixed:
            return self._run(blob, blob.shape[0])
        parts = []
        for i in range(0, blob.shape[0], fixed):
            part = blob[i : i + fixed]
            if len(part) < fixed:
                part = np.concatenate([part, np.zeros((fixed - len(part), *part.shape[1:]), part.dtype)])
            parts.append(self._run(part, fixed)[: min(fixed, blob.shape[0] - i)])
        return np.concatenate(parts)

    def _run(self, blob: np.ndarray, count: int) -> np.ndarray:
        """One inference run; whatever the backend raises or returns amiss becomes a ModelError."""
        try:
            out = np.asarray(self.backend.run(blob))
        except Exception as exc:  # onnxruntime and cv2.dnn raise their own types, MemoryError included
            raise ModelError(f"{self.path}: {self.backend.name} failed at inference ({first_line(exc)})") from None
        each = self.info.output_shape
        if out.size != count * int(np.prod(each)):
            need = " x ".join(str(v) for v in (count, *each))
            what = {"logits": f"{each[0]} labels", "mask": f"a {each[-1]}x{each[0]} mask each"}.get(
                self.info.kind, f"{each[0]} scores for each of {each[-1]} steps")
            raise ModelError(f"{self.path}: output {self.info.output_name!r} has shape {_shape_text(out.shape)}; "
                             f"{count} inputs and {what} need {need}")
        out = out.reshape(count, *each).astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise ModelError(f"{self.path}: {self.backend.name} produced non-finite scores (NaN or infinity)")
        return out

    def classify(self, tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, softmax confidences) for uint8 tiles at the input size."""
        if not tiles:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        step = self.tiles_per_run
        logits = np.concatenate([self.logits(self.blob(tiles[i : i + step])) for i in range(0, len(tiles), step)])
        probs = softmax(logits)
        best = probs.argmax(axis=1)
        return best, probs[np.arange(len(best)), best]


def _names(names) -> str:
    return ", ".join(repr(n[:40]) for n in list(names)[:5]) + (", ..." if len(names) > 5 else "") or "none"


def _shape_text(shape) -> str:
    text = str([d if isinstance(d, int) else str(d)[:20] for d in list(shape)[:8]])
    return text if len(shape) <= 8 else text[:-1] + ", ...]"


def check_input_matches(info: ModelInfo, inputs: dict[str, tuple]) -> None:
    """The graph must take the input the metadata describes: same name, C, H and W, and the
    same batch where the graph fixes one."""
    if info.input_name not in inputs:
        raise ModelError(f"the graph has no input {info.input_name!r} (it has {_names(inputs)})")
    shape = inputs[info.input_name]
    fixed_differ = any(isinstance(g, int) and g != m for g, m in zip(shape, info.input_shape))
    if len(shape) != 4 or fixed_differ:  # a named (dynamic) dimension takes any size
        raise ModelError(f"the graph input {info.input_name!r} has shape {_shape_text(shape)}, "
                         f"the metadata says {list(info.input_shape)}")


def check_output_matches(info: ModelInfo, outputs: dict[str, tuple]) -> None:
    """The graph must give the output the metadata names, with one score per label where it says."""
    if info.output_name not in outputs:
        raise ModelError(f"the graph has no output {info.output_name!r} (it has {_names(outputs)})")
    shape = outputs[info.output_name]
    if info.kind == "logits" and shape and isinstance(shape[-1], int) and shape[-1] != len(info.labels):
        raise ModelError(f"the graph output {info.output_name!r} gives {shape[-1]} scores per input, "
                         f"but there are {len(info.labels)} labels")
    if info.kind == "sequence" and len(shape) > 1 and isinstance(shape[1], int) and shape[1] != len(info.labels) + 1:
        raise ModelError(f"the graph output {info.output_name!r} gives {shape[1]} scores per step, "
                         f"but there are {len(info.labels)} labels and the blank")


def check_input_size(info: ModelInfo, max_pixels: int) -> None:
    """Refuse an input too large to build before anything is allocated for it."""
    pp = info.preprocess
    pixels = (info.fixed_batch or 1) * pp.width * pp.height
    if pixels > max_pixels:
        batch = f"a fixed batch of {info.fixed_batch} x " if (info.fixed_batch or 1) > 1 else ""
        raise ModelError(f"declares {batch}a {pp.width}x{pp.height} input ({pixels} pixels a run), over the limit of "
                         f"{max_pixels} (--max-model-pixels)")
    if info.fixed_batch is not None and info.fixed_batch > MAX_BATCH:
        raise ModelError(f"declares a fixed batch of {info.fixed_batch}, over the limit of {MAX_BATCH}")


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
