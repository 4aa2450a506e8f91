"""The ink detector at run time: which pixels of a frame are digit ink (train/detector.py).

The detector is an ONNX file with the same metadata contract as the classifier, output kind
"mask": one logit per pixel of a small copy of the frame. The finder then binarises only
near what it marked (runtime/digits.py), so rules, boxes, shadow edges and the desk around a
page are not read as digits.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.model import Model
from digitpipe.runtime.preprocess import resize_to_input

DETECTOR_NAME = "detector.onnx"  # run-digit looks for it beside the classifier
DETECTOR_INT8_NAME = "detector.int8.onnx"  # ...and for this first beside an INT8 classifier
SURE = 3.0  # logit (probability 0.95)
# A part with a logit past this somewhere (2: probability 0.88) but past SURE nowhere is read too,
# and a digit found only there must be the reader's WEAK_CONFIDENCE sure: ink in deep shade is
# marked as weakly as a photograph's texture.
WEAK = 2.0


def detector_path(choice: str, model: str | Path) -> Path | None:
    """--detector auto|none|PATH -> the detector file to load, or None for the finder's rules
    alone. auto: DETECTOR_NAME beside the model, when there is one; beside an INT8 classifier
    (digits.int8.onnx) its INT8 copy (detector.int8.onnx) first, so the INT8 path is INT8 throughout."""
    if choice == "none":
        return None
    if choice == "auto":
        model = Path(model)
        names = [DETECTOR_INT8_NAME, DETECTOR_NAME] if model.name.endswith(".int8.onnx") else [DETECTOR_NAME]
        return next((model.with_name(n) for n in names if model.with_name(n).is_file()), None)
    return Path(choice)


class InkDetector:
    def __init__(self, model: Model):
        if model.info.kind != "mask":
            raise ModelError(f"{model.path}: is a classifier, not an ink detector (its output kind is "
                             f"{model.info.kind!r}, a detector's is 'mask')")
        self.model = model

    @classmethod
    def load(cls, path: str | Path, backend: str = "onnxruntime", device: str = "auto", **kwargs) -> "InkDetector":
        return cls(Model(path, backend, device, **kwargs))

    def logits(self, image: np.ndarray) -> np.ndarray:
        """The detector's logits (H x W at its input size) for a gray or BGR uint8 frame."""
        small = resize_to_input(image, self.model.info.preprocess)
        return self.model.logits(self.model.blob([small]))[0]

    def ink_mask(self, image: np.ndarray) -> np.ndarray:
        """Where the detector marks digit ink: bool, at its input size (see sure_parts)."""
        return sure_parts(self.logits(image))

    def marks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the parts marked at least WEAK sure somewhere, the parts SURE somewhere), bool, at
        the detector's input size: the reader reads the first and trusts the second."""
        return tuple(parts_past(self.logits(image), (WEAK, SURE)))


def sure_parts(logits: np.ndarray, sure: float = SURE) -> np.ndarray:
    """Hysteresis, as edge detectors threshold: a part marked with logits above 0 counts only
    when the detector is sure (a logit above `sure`) somewhere in it; speckles it is unsure of
    everywhere (textures of photographs) are dropped."""
    return parts_past(logits, (sure,))[0]


def parts_past(logits: np.ndarray, levels) -> list[np.ndarray]:
    """sure_parts at each of several levels, the marked parts labelled once."""
    marked = (logits > 0).astype(np.uint8)
    count, parts = cv2.connectedComponents(marked, connectivity=8)
    found = []
    for level in levels:
        keep = np.zeros(count, bool)
        keep[parts[logits > level]] = True
        keep[0] = False  # the unmarked background
        found.append(keep[parts])
    return found


def check_is_classifier(model: Model) -> None:
    """--model must be a classifier: a detector given there gets a one-line hint."""
    if model.info.kind != "logits":
        raise ModelError(f"{model.path}: is an ink detector, not a classifier (pass it as --detector)")
