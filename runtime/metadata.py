"""The ONNX metadata contract: everything the runtime needs to use a model.

Each metadata_props value is a JSON string (parsed with json, never eval):
  digitpipe   schema version, "2" ("1" files load too: they also carried an "ink" field,
              which nothing read; polarity follows "fit")
  labels      ["0", "1", ...]
  input       {"name", "shape" (batch may be a string for a dynamic axis), "layout": "NCHW", "color": gray|rgb|bgr}
  output      {"name", "kind": "logits" (N x labels, a classifier) or "mask" (N x 1 x H x W, one logit
               per input pixel: an ink detector, whose one label names what it marks) or "sequence"
               (N x (1 + labels) x 1 x W/stride: a row of ink read as a sequence, one score per label and
               the CTC blank first for each `stride` input columns; "stride": that many columns),
               "reject": a label (optional): the class for what is none of the others, e.g. "no digit"}
  preprocess  {"size": [w, h], "mean": [...], "std": [...] (0..1 pixel scale), "swap_rb",
               "fit": digit|resize|strip (default resize; digit: find the ink, either polarity,
                      and make it light on dark as MNIST has it; strip: a group of such ink, its height
                      scaled to the finder's fill, centred),
               "resize_shorter": N (optional; resize: shorter side to N, then the centre crop)}
  provenance  {"dataset", "arch", "test_accuracy", "checkpoint_sha256", "versions", ...}
The exporter writes it with to_props(); the runtime reads it with from_props().
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from digitpipe.runtime.errors import ModelError

SCHEMA_VERSION = "2"
READABLE_SCHEMAS = ("1", "2")
COLORS = ("gray", "rgb", "bgr")
FITS = ("digit", "resize", "strip")
KINDS = ("logits", "mask", "sequence")


@dataclass(frozen=True)
class Preprocess:
    width: int
    height: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: str = "gray"
    fit: str = "resize"  # the parser's default for a file that names none
    resize_shorter: int = 0  # fit "resize": 0 stretches to the input size; N keeps aspect, then crops the centre

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def swap_rb(self) -> bool:
        return self.color == "rgb"  # OpenCV images are BGR


@dataclass(frozen=True)
class ModelInfo:
    labels: tuple[str, ...]
    input_name: str
    input_shape: tuple  # (batch, C, H, W); batch is an int or a name for a dynamic axis
    output_name: str
    preprocess: Preprocess
    provenance: dict = field(default_factory=dict)
    reject: str = ""  # the label that means "none of the others": the reader reports nothing for it
    kind: str = "logits"  # or "mask": one logit per input pixel (an ink detector); or "sequence"
    stride: int = 0  # "sequence": input columns per output step

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output for one input: a score per label, a logit per input pixel, or a score per
        label and the blank for each step of a sequence."""
        pp = self.preprocess
        if self.kind == "sequence":
            return (len(self.labels) + 1, 1, pp.width // self.stride)
        return (pp.height, pp.width) if self.kind == "mask" else (len(self.labels),)

    @property
    def fixed_batch(self) -> int | None:
        return self.input_shape[0] if isinstance(self.input_shape[0], int) else None


def to_props(info: ModelInfo) -> dict[str, str]:
    pp = info.preprocess
    return {
        "digitpipe": SCHEMA_VERSION,
        "labels": json.dumps(list(info.labels)),
        "input": json.dumps({"name": info.input_name, "shape": list(info.input_shape), "layout": "NCHW", "color": pp.color}),
        "output": json.dumps({"name": info.output_name, "kind": info.kind, **({"reject": info.reject} if info.reject else {}),
                              **({"stride": info.stride} if info.kind == "sequence" else {})}),
        "preprocess": json.dumps({"size": [pp.width, pp.height], "mean": list(pp.mean), "std": list(pp.std),
                                  "swap_rb": pp.swap_rb, "fit": pp.fit,
                                  "resize_shorter": pp.resize_shorter}),
        "provenance": json.dumps(info.provenance, sort_keys=True),
    }


# Limits on what a file may declare: generous for any real model, small enough that a
# hostile file cannot make the runtime spend unbounded memory or time before it is refused.
MAX_PROP_CHARS = 1_000_000  # one metadata value
MAX_DEPTH = 16  # JSON nesting
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 100
MAX_NAME_CHARS = 256
MAX_BATCH = 256  # a fixed batch the runtime pads to
MAX_SIDE = 65_536  # any declared side; the input's area has its own limit (runtime/model.py)


def from_props(props: dict[str, str]) -> ModelInfo:
    """Parse and check the metadata; ModelError names the first thing wrong."""
    if "digitpipe" not in props:
        raise ModelError("has no digitpipe metadata (export it with `make export`)")
    if props["digitpipe"] not in READABLE_SCHEMAS:
        raise ModelError(f"metadata schema {props['digitpipe'][:20]!r} is not one this runtime reads {READABLE_SCHEMAS}")
    labels = _json(props, "labels", list)
    inp = _json(props, "input", dict)
    out = _json(props, "output", dict)
    pre = _json(props, "preprocess", dict)
    prov = _json(props, "provenance", dict) if "provenance" in props else {}
    check_labels(labels, "metadata labels")
    _check(is_name(inp.get("name")) and is_name(out.get("name")),
           f"input and output need a name (a string of 1-{MAX_NAME_CHARS} characters)")
    kind = out.get("kind", "logits")
    _check(kind in KINDS, f"output kind must be one of {KINDS}")
    _check(kind != "mask" or len(labels) == 1, "a mask output has one label: what it marks")
    reject = out.get("reject", "")
    _check(isinstance(reject, str) and (reject == "" or reject in labels), f"output reject {str(reject)[:40]!r} is not one of the labels")
    shape = inp.get("shape")
    _check(isinstance(shape, list) and len(shape) == 4 and all(is_count(d, MAX_SIDE) for d in shape[1:])
           and (is_name(shape[0]) or is_count(shape[0], MAX_BATCH)),
           f"input shape must be [batch, C, H, W] (batch a name or 1-{MAX_BATCH}, sides 1-{MAX_SIDE})")
    color = inp.get("color")
    _check(color in COLORS, f"input color must be one of {COLORS}")
    size = pre.get("size")
    _check(isinstance(size, list) and len(size) == 2 and all(is_count(v, MAX_SIDE) for v in size),
           "preprocess size must be [width, height]")
    mean, std = pre.get("mean"), pre.get("std")
    channels = shape[1]
    for name, vals in (("mean", mean), ("std", std)):
        _check(isinstance(vals, list) and len(vals) == channels and all(is_finite_number(v) for v in vals),
               f"preprocess {name} needs one finite number per input channel ({channels})")
    check_normalisation(mean, std, "preprocess")
    _check(channels == (1 if color == "gray" else 3), f"color {color!r} does not fit {channels} input channels")
    _check(shape[2:] == [size[1], size[0]], "preprocess size does not match the input shape")
    _check(pre.get("swap_rb", color == "rgb") == (color == "rgb"), "swap_rb contradicts the input color")
    fit = pre.get("fit", "resize")
    _check(fit in FITS, f"preprocess fit must be one of {FITS}")
    stride = out.get("stride", 0) if kind == "sequence" else 0
    _check(kind != "sequence" or (is_count(stride, size[0]) and size[0] % stride == 0),
           "a sequence output needs a stride that divides the input width")
    shorter = pre.get("resize_shorter", 0)
    _check(shorter == 0 or (is_count(shorter, 4 * max(size)) and shorter >= max(size)),
           "preprocess resize_shorter must be 0 or from the input size to 4 times it")
    return ModelInfo(
        labels=tuple(labels),
        input_name=inp["name"],
        input_shape=tuple(shape),
        output_name=out["name"],
        preprocess=Preprocess(width=size[0], height=size[1], mean=tuple(float(v) for v in mean),
                              std=tuple(float(v) for v in std), color=color, fit=fit, resize_shorter=shorter),
        provenance=prov,
        reject=reject,
        kind=kind,
        stride=stride,
    )


def _json(props: dict[str, str], key: str, kind: type):
    if key not in props:
        raise ModelError(f"metadata lacks {key!r}")
    if len(props[key]) > MAX_PROP_CHARS:
        raise ModelError(f"metadata {key!r} is {len(props[key])} characters long, over the limit of {MAX_PROP_CHARS}")
    try:
        value = json.loads(props[key])
    except RecursionError:
        raise ModelError(f"metadata {key!r} is nested too deeply") from None
    except (ValueError, TypeError):  # JSONDecodeError, and ints past Python's digit limit
        raise ModelError(f"metadata {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise ModelError(f"metadata {key!r} must be a JSON {kind.__name__}")
    if _depth(value) > MAX_DEPTH:
        raise ModelError(f"metadata {key!r} is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth(value, limit: int = MAX_DEPTH + 1) -> int:
    """Nesting depth of parsed JSON, counted no further than limit (no recursion)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        deepest = max(deepest, d)
        if d < limit and isinstance(item, (list, dict)):
            level.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def is_count(value, most: int) -> bool:
    """An int (not a bool) from 1 to most."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def is_name(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value.isprintable()


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_labels(labels, what: str) -> None:
    """Labels are printed one reading to a line: short printable strings, none repeated."""
    if not labels or len(labels) > MAX_LABELS:
        raise ModelError(f"{what}: needs 1 to {MAX_LABELS} labels, has {len(labels)}")
    for label in labels:
        if not (isinstance(label, str) and 0 < len(label) <= MAX_LABEL_CHARS and label.isprintable()):
            raise ModelError(f"{what}: each label must be printable text of 1-{MAX_LABEL_CHARS} characters, "
                             f"not {str(label)[:40]!r}")
    if len(set(labels)) != len(labels):
        raise ModelError(f"{what}: a label repeats")


def check_normalisation(mean, std, what: str) -> None:
    if not all(-1e3 <= m <= 1e3 for m in mean):
        raise ModelError(f"{what}: mean values must lie within +-1000 (pixels are on the 0..1 scale)")
    if not all(1e-6 <= s <= 1e3 for s in std):
        raise ModelError(f"{what}: std values must lie between 1e-6 and 1000")


def _check(ok, message: str) -> None:
    if not ok:
        raise ModelError(f"metadata: {message}")
