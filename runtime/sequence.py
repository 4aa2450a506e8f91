"""The sequence reader at run time: wide ink read whole as a run of touching digits (train/sequence.py).

Cutting touching digits apart and classifying the pieces fails where no cut separates them
(docs/measurements.md: touching digits). The sequence reader reads the group of ink whole,
as text recognisers read a word (CRNN with CTC): an ONNX file with the metadata contract's
output kind "sequence", a score per label and the blank for each `stride` columns of a
strip of ink (fit "strip", runtime/digits.py: fit_strip), decoded greedily here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.model import Model

SEQUENCE_NAME = "sequence.onnx"  # run-digit looks for it beside the classifier


@dataclass(frozen=True)
class Sequence:
    text: str
    confidence: float  # the least sure of its characters (of the blank at every step, when it read nothing)
    confidences: tuple[float, ...]  # each character's
    columns: tuple[tuple[int, int], ...]  # each character's input columns [start, end)


def sequence_path(choice: str, model: str | Path) -> Path | None:
    """--sequence auto|none|PATH -> the file to load, or None: without one, touching digits are
    only cut apart. auto: SEQUENCE_NAME beside the model, when there is one."""
    if choice == "none":
        return None
    if choice == "auto":
        beside = Path(model).with_name(SEQUENCE_NAME)
        return beside if beside.is_file() else None
    return Path(choice)


class SequenceReader:
    def __init__(self, model: Model):
        if model.info.kind != "sequence":
            raise ModelError(f"{model.path}: is not a sequence reader (its output kind is {model.info.kind!r}, "
                             f"a sequence reader's is 'sequence')")
        self.model = model

    @classmethod
    def load(cls, path: str | Path, backend: str = "onnxruntime", device: str = "auto", **kwargs) -> "SequenceReader":
        return cls(Model(path, backend, device, **kwargs))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the strips it reads."""
        pp = self.model.info.preprocess
        return pp.width, pp.height

    def read(self, strips: list[np.ndarray]) -> list[Sequence]:
        """Each uint8 strip (fit_strip's, at this reader's size) read as a sequence."""
        if not strips:
            return []
        logits = self.model.logits(self.model.blob(strips))
        return [ctc_greedy(out[:, 0], self.model.labels, self.model.info.stride) for out in logits]


def ctc_greedy(logits: np.ndarray, labels: tuple[str, ...], stride: int) -> Sequence:
    """Best-path CTC decoding of (1 + labels) x steps logits, the blank first: the most likely
    label at each step, repeats merged, blanks dropped."""
    z = np.exp(logits - logits.max(axis=0))
    probs = z / z.sum(axis=0)
    best = probs.argmax(axis=0)
    text, sure, columns = [], [], []
    for t, k in enumerate(best):
        if k == 0:
            continue
        if t > 0 and best[t - 1] == k:  # the same character over one more step
            sure[-1] = max(sure[-1], float(probs[k, t]))
            columns[-1] = (columns[-1][0], (t + 1) * stride)
        else:
            text.append(labels[k - 1])
            sure.append(float(probs[k, t]))
            columns.append((t * stride, (t + 1) * stride))
    confidence = min(sure) if sure else float(probs[0].min())
    return Sequence("".join(text), confidence, tuple(sure), tuple(columns))
