"""digitpipe.Reader: read digits in Python with what run-digit uses (README: Python API)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from digitpipe.runtime.bundled import bundled_model
from digitpipe.runtime.detector import InkDetector, check_is_classifier, detector_path
from digitpipe.runtime.errors import InputError, ModelError
from digitpipe.runtime.foreign import Overrides
from digitpipe.runtime.imageio import DEFAULT_MAX_PIXELS, read_image, to_uint8
from digitpipe.runtime.model import DEFAULT_MAX_MODEL_PIXELS, Model
from digitpipe.runtime.reader import DEFAULT_MIN_CONFIDENCE, Box, DigitReader, Reading
from digitpipe.runtime.sequence import SequenceReader, sequence_path


class Reader:
    """A digit model (and its ink detector) loaded once, to read many images.

    model: an ONNX file from `make export` (default: the model bundled with digitpipe).
    detector: "auto" (detector.onnx beside the model, when there is one), "none", or a path.
    sequence: the sequence reader of touching digits: "auto" (sequence.onnx beside the model, when
    there is one), "none" (touching digits are only cut apart), or a path.
    check_model: refuse files whose bytes differ from their export report (True: the reports beside
    them; a path: the model's report there).
    Raises ModelError for a model it cannot use; read() raises InputError for an image it cannot read.
    """

    def __init__(self, model: str | os.PathLike | None = None, *, backend: str = "onnxruntime",
                 device: str = "auto", detector: str | os.PathLike = "auto", sequence: str | os.PathLike = "auto",
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, single: bool = False, roi: Box | None = None,
                 check_model: bool | str | os.PathLike = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_model_pixels: int = DEFAULT_MAX_MODEL_PIXELS, overrides: Overrides = Overrides()):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError("min_confidence must be between 0 and 1")
        self.model_path = Path(model) if model is not None else bundled_model()
        classifier = Model(self.model_path, backend, device, overrides=overrides, check_report=check_model,
                           max_input_pixels=max_model_pixels)
        check_is_classifier(classifier)
        # The networks that serve a classifier which finds digits: by default the files beside it.
        fit = classifier.info.preprocess.fit
        load = dict(backend=backend, device=device, check_report=bool(check_model), max_input_pixels=max_model_pixels)
        self.detector_path, ink = _serving_network(
            "--detector", "a detector", detector_path(str(detector), self.model_path), detector != "auto", fit,
            self.model_path, lambda p: InkDetector.load(p, **load))
        self.sequence_path, touching = _serving_network(
            "--sequence", "a sequence reader", sequence_path(str(sequence), self.model_path), sequence != "auto", fit,
            self.model_path, lambda p: SequenceReader.load(p, **load))
        self.max_pixels = max_pixels
        self.digits = DigitReader(classifier, min_confidence, single, roi=roi, detector=ink, sequence=touching)

    @property
    def roi(self) -> Box | None:
        return self.digits.roi

    @property
    def labels(self) -> tuple[str, ...]:
        return self.digits.model.labels

    def read(self, image: str | os.PathLike | np.ndarray) -> Reading:
        """Digits in an image file or array (uint8 gray, BGR or BGRA as OpenCV loads them; other
        depths are scaled to 0-255). reading.to_dict() is what `run-digit --json` prints."""
        return self.digits.read(self.load(image))

    def read_stream(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, Reading]]:
        """(frame, reading) for each of a video's frames, the readings those of read(); the ink
        detector of the next frame runs beside the reading of this one (what run-digit --video
        and --camera do)."""
        return self.digits.read_stream(self.load(frame) for frame in frames)

    def load(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        """An image file or array -> the uint8 gray or BGR array read() reads; InputError if it is none."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(image, self.max_pixels)
        if not isinstance(image, np.ndarray):
            raise InputError(f"expected an image path or a numpy array, got {type(image).__name__}")
        if image.ndim not in (2, 3) or not np.issubdtype(image.dtype, np.number):
            raise InputError(f"expected an H x W or H x W x C array of numbers, got {image.dtype} {image.shape}")
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise InputError(f"image of {image.shape[1]}x{image.shape[0]} is over {self.max_pixels} pixels")
        return to_uint8(image)


def _serving_network(option: str, what: str, path: Path | None, asked: bool, fit: str, model: Path, load):
    """(path, loaded network) of a network that serves the classifier, or (None, None) when there
    is none or the classifier reads whole images (fit "resize"): asked for by name, that is a ModelError."""
    if path is None:
        return None, None
    if fit != "digit":
        if asked:
            raise ModelError(f"{option}: {model} reads whole images (fit {fit!r}); {what} serves models that find digits")
        return None, None
    return path, load(path)
