"""Verification: the exported file must compute what PyTorch computes, through the runtime.

Checks, all on the exact bytes about to be deployed:
  1. onnx.checker full check;
  2. random input tensors through PyTorch, onnxruntime and cv2.dnn;
  3. real test images encoded as PNG and read back by the runtime (its image decoding,
     its tile handling, its cv2.dnn.blobFromImages preprocessing), run by onnxruntime and
     cv2.dnn, against PyTorch on the training transform of the same images.
Each comparison reports max |logit difference| and top-1 agreement; thresholds decide.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from runtime.backends import BACKENDS
from runtime.imageio import decode_image
from runtime.model import Model
from runtime.reader import DigitReader
from train.data import Split, normalize
from train.datasets import DatasetSpec

ATOL = 1e-4  # max |logit difference| allowed
PREPROCESS_ATOL = 1e-5  # runtime blob vs training transform
CHUNK = 1000


@dataclass
class Comparison:
    name: str
    count: int
    max_abs_diff: float
    top1_agreement: float
    accuracy: float | None = None  # against labels, where the inputs have them

    def passed(self, atol: float = ATOL) -> bool:
        return self.max_abs_diff <= atol and self.top1_agreement == 1.0

    def to_dict(self) -> dict:
        d = {"name": self.name, "count": self.count, "max_abs_logit_diff": self.max_abs_diff,
             "top1_agreement": self.top1_agreement}
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        return d


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Comparison:
    diff = float(np.abs(reference - candidate).max()) if reference.size else float("inf")
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    acc = float((candidate.argmax(1) == labels).mean()) if labels is not None else None
    return Comparison(name, len(reference), diff, agree, acc)


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]).numpy()


def runtime_tiles(reader: DigitReader, images: torch.Tensor) -> list[np.ndarray]:
    """Each image as a PNG file's bytes, decoded and located exactly as run-digit does."""
    tiles = []
    for img in images.numpy():
        ok, png = cv2.imencode(".png", img.transpose(1, 2, 0))
        assert ok, "PNG encoding failed"
        boxes, found = reader.locate(decode_image(png, "test image"))
        tiles.append(found[0] if found else np.zeros_like(img[0]))
    return tiles


def verify_file(onnx_path: Path, model: torch.nn.Module, spec: DatasetSpec, test: Split,
                random_count: int = 64, seed: int = 0) -> dict:
    """Run every check on onnx_path; return a report dict with 'passed' and the figures."""
    report: dict = {"atol": ATOL}
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    report["onnx_checker"] = "passed (full_check)"

    runtimes = {name: Model(onnx_path, backend=name, device="cpu") for name in BACKENDS}
    comparisons = []
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(random_count, spec.channels, spec.size, spec.size, generator=gen)
    ref = torch_logits(model, x)
    for name, rt in runtimes.items():
        comparisons.append(compare(f"random tensors: {name}", ref, _chunked(rt.logits, x.numpy())))

    reader = DigitReader(runtimes["onnxruntime"])
    blob = runtimes["onnxruntime"].blob(runtime_tiles(reader, test.images))
    train_input = normalize(test.images, spec)
    report["preprocess_max_abs_diff"] = float(np.abs(blob - train_input.numpy()).max())
    labels = test.labels.numpy()
    ref = torch_logits(model, train_input)
    report["pytorch_test_accuracy"] = float((ref.argmax(1) == labels).mean())
    for name, rt in runtimes.items():
        comparisons.append(compare(f"test images: {name}", ref, _chunked(rt.logits, blob), labels))
    report["comparisons"] = [c.to_dict() for c in comparisons]
    report["providers"] = {name: rt.backend.providers for name, rt in runtimes.items()}
    report["passed"] = all(c.passed() for c in comparisons) and report["preprocess_max_abs_diff"] <= PREPROCESS_ATOL
    return report


def _chunked(fn, x: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(np.ascontiguousarray(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)])
