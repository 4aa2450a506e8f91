"""Verification: the exported file must compute what PyTorch computes, through the runtime.

Checks, all on the exact bytes about to be deployed:
  1. onnx.checker full check;
  2. random input tensors through PyTorch, onnxruntime and cv2.dnn;
  3. the test set written to disk as PNG files and read back by the runtime (its image
     reading, its tile handling, its cv2.dnn.blobFromImages preprocessing), run by
     onnxruntime and cv2.dnn, against PyTorch on the training transform of the same images.
A float model must match PyTorch logit for logit (ATOL, 100% top-1); an INT8 model must
keep its test accuracy within INT8_MAX_DROP points of PyTorch's.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from digitpipe.runtime.backends import BACKENDS
from digitpipe.runtime.imageio import read_image
from digitpipe.runtime.model import Model
from digitpipe.runtime.reader import DigitReader
from digitpipe.train.data import Split, model_input
from digitpipe.train.datasets import DatasetSpec

ATOL = 1e-4  # max |logit difference| allowed for a float model
PREPROCESS_ATOL = 1e-5  # runtime blob vs training transform
FLOAT_MAX_GAP = 0.05  # accuracy points between PyTorch and each runtime, float model
INT8_MAX_DROP = 0.2  # accuracy points an INT8 model may lose against PyTorch
CHUNK = 1000


@dataclass
class Comparison:
    name: str
    count: int
    max_abs_diff: float
    top1_agreement: float
    differing: int  # predictions that differ from the reference
    accuracy: float | None = None  # against labels, where the inputs have them

    def passed(self, atol: float = ATOL) -> bool:
        return self.max_abs_diff <= atol and self.top1_agreement == 1.0

    def to_dict(self) -> dict:
        d = {"name": self.name, "count": self.count, "max_abs_logit_diff": self.max_abs_diff,
             "top1_agreement": self.top1_agreement, "differing_predictions": self.differing}
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        return d


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Comparison:
    diff = float(np.abs(reference - candidate).max()) if reference.size else float("inf")
    same = reference.argmax(1) == candidate.argmax(1)
    acc = float((candidate.argmax(1) == labels).mean()) if labels is not None else None
    return Comparison(name, len(reference), diff, float(same.mean()), int((~same).sum()), acc)


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]).numpy()


def read_back(pixels: np.ndarray, path: Path) -> np.ndarray:
    """pixels as run-digit gets them: written to path as a PNG file and read by its reader
    (the file is removed again)."""
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"cannot write {path}")
    try:
        return read_image(path)
    finally:
        path.unlink()


def runtime_tiles(reader: DigitReader, images: torch.Tensor, folder: Path) -> list[np.ndarray]:
    """Each image written as a PNG file, then read and located exactly as run-digit does.

    Training stores colour images RGB; a PNG written by OpenCV takes BGR."""
    tiles = []
    for i, img in enumerate(images.numpy()):
        pixels = img.transpose(1, 2, 0)
        if pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        _, found = reader.locate(read_back(pixels, folder / f"{i:05d}.png"))
        tiles.append(found[0] if found else np.zeros_like(pixels))
    return tiles


def open_runtimes(onnx_path: Path) -> dict[str, Model]:
    return {name: Model(onnx_path, backend=name, device="cpu") for name in BACKENDS}


def dataset_parity(runtimes: dict[str, Model], model: torch.nn.Module, spec: DatasetSpec, test: Split) -> dict:
    """The test set through PyTorch (training transform) and each runtime (image files).

    Returns pytorch_test_accuracy, preprocess_max_abs_diff and one Comparison per runtime."""
    first = next(iter(runtimes.values()))
    with tempfile.TemporaryDirectory(prefix="digitpipe-verify-") as tmp:
        blob = first.blob(runtime_tiles(DigitReader(first), test.images, Path(tmp)))
    train_input = model_input(test.images, spec)
    labels = test.labels.numpy()
    ref = torch_logits(model, train_input)
    return {
        "pytorch_test_accuracy": float((ref.argmax(1) == labels).mean()),
        "preprocess_max_abs_diff": float(np.abs(blob - train_input.numpy()).max()),
        "comparisons": [compare(f"test images: {name}", ref, _chunked(rt.logits, blob), labels)
                        for name, rt in runtimes.items()],
    }


def points(accuracy: float, reference: float) -> float:
    """accuracy - reference in percentage points, rounded so that counts compare exactly
    (98.9% - 98.7% is 0.2 points, not 0.20000000000000018)."""
    return round((accuracy - reference) * 100, 9)


def accuracy_gap(parity: dict, int8: bool) -> float:
    """How far the runtimes' test accuracy sits from PyTorch's, in points, as the rule for
    this kind of file counts it: an INT8 file by its largest drop (scoring higher by chance
    is no fault), a float file by its largest difference either way (it must compute what
    PyTorch computes). Export's verification and `make check` both judge by this."""
    ref = parity["pytorch_test_accuracy"]
    drops = [points(ref, c.accuracy) for c in parity["comparisons"]]
    return max(drops) if int8 else max(abs(d) for d in drops)


def allowed_gap(int8: bool) -> float:
    return INT8_MAX_DROP if int8 else FLOAT_MAX_GAP


def verify_file(onnx_path: Path, runtimes: dict[str, Model], model: torch.nn.Module, spec: DatasetSpec,
                test: Split, random_count: int = 64, seed: int = 0) -> dict:
    """Every check for a float model on onnx_path (open in runtimes); a report with 'passed' and the figures."""
    report = _checked(onnx_path, kind="float32", atol=ATOL)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(random_count, spec.preprocess.channels, spec.size, spec.size, generator=gen)
    ref = torch_logits(model, x)
    comparisons = [compare(f"random tensors: {name}", ref, _chunked(rt.logits, x.numpy()))
                   for name, rt in runtimes.items()]
    parity = dataset_parity(runtimes, model, spec, test)
    comparisons += parity["comparisons"]
    report.update(_parity_fields(parity, runtimes), comparisons=[c.to_dict() for c in comparisons])
    report["passed"] = (all(c.passed() for c in comparisons)
                        and report["preprocess_max_abs_diff"] <= PREPROCESS_ATOL)
    return report


def verify_int8(onnx_path: Path, runtimes: dict[str, Model], model: torch.nn.Module, spec: DatasetSpec,
                test: Split) -> dict:
    """An INT8 model computes other logits by design: it passes on accuracy, not on logits."""
    report = _checked(onnx_path, kind="int8", max_accuracy_drop_points=INT8_MAX_DROP)
    parity = dataset_parity(runtimes, model, spec, test)
    report.update(_parity_fields(parity, runtimes), comparisons=[c.to_dict() for c in parity["comparisons"]])
    drop = accuracy_gap(parity, int8=True)
    report["accuracy_drop_points"] = drop
    report["passed"] = drop <= allowed_gap(int8=True) and report["preprocess_max_abs_diff"] <= PREPROCESS_ATOL
    return report


def _checked(onnx_path: Path, **fields) -> dict:
    """The start of a report: onnx.checker's full check has passed (it raises otherwise)."""
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    return {**fields, "onnx_checker": "passed (full_check)"}


def _parity_fields(parity: dict, runtimes: dict[str, Model]) -> dict:
    return {"preprocess_max_abs_diff": parity["preprocess_max_abs_diff"],
            "pytorch_test_accuracy": parity["pytorch_test_accuracy"],
            "providers": {name: rt.backend.providers for name, rt in runtimes.items()}}


def _chunked(fn, x: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(np.ascontiguousarray(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)])
