"""The ONNX metadata contract: everything the runtime needs to use a model.

Each metadata_props value is a JSON string (parsed with json, never eval):
  digitpipe   schema version, "2" ("1" files load too: they also carried an "ink" field,
              which nothing read; polarity follows "fit")
  labels      ["0", "1", ...]
  input       {"name", "shape" (batch may be a string for a dynamic axis), "layout": "NCHW", "color": gray|rgb|bgr}
  output      {"name", "kind": "logits",
               "reject": a label (optional): the class for what is none of the others, e.g. "no digit"}
  preprocess  {"size": [w, h], "mean": [...], "std": [...] (0..1 pixel scale), "swap_rb",
               "fit": digit|resize (default resize; digit: find the ink, either polarity,
                      and make it light on dark as MNIST has it),
               "resize_shorter": N (optional; resize: shorter side to N, then the centre crop)}
  provenance  {"dataset", "arch", "test_accuracy", "checkpoint_sha256", "versions", ...}
The exporter writes it with to_props(); the runtime reads it with from_props().
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from runtime.errors import ModelError

SCHEMA_VERSION = "2"
READABLE_SCHEMAS = ("1", "2")
COLORS = ("gray", "rgb", "bgr")
FITS = ("digit", "resize")


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

    @property
    def fixed_batch(self) -> int | None:
        return self.input_shape[0] if isinstance(self.input_shape[0], int) else None


def to_props(info: ModelInfo) -> dict[str, str]:
    pp = info.preprocess
    return {
        "digitpipe": SCHEMA_VERSION,
        "labels": json.dumps(list(info.labels)),
        "input": json.dumps({"name": info.input_name, "shape": list(info.input_shape), "layout": "NCHW", "color": pp.color}),
        "output": json.dumps({"name": info.output_name, "kind": "logits", **({"reject": info.reject} if info.reject else {})}),
        "preprocess": json.dumps({"size": [pp.width, pp.height], "mean": list(pp.mean), "std": list(pp.std),
                                  "swap_rb": pp.swap_rb, "fit": pp.fit,
                                  "resize_shorter": pp.resize_shorter}),
        "provenance": json.dumps(info.provenance, sort_keys=True),
    }


def from_props(props: dict[str, str]) -> ModelInfo:
    """Parse and check the metadata; ModelError names the first thing wrong."""
    if "digitpipe" not in props:
        raise ModelError("has no digitpipe metadata (export it with `make export`)")
    if props["digitpipe"] not in READABLE_SCHEMAS:
        raise ModelError(f"metadata schema {props['digitpipe']!r} is not one this runtime reads {READABLE_SCHEMAS}")
    labels = _json(props, "labels", list)
    inp = _json(props, "input", dict)
    out = _json(props, "output", dict)
    pre = _json(props, "preprocess", dict)
    prov = _json(props, "provenance", dict) if "provenance" in props else {}
    _check(labels and all(isinstance(x, str) for x in labels), "labels must be a non-empty list of strings")
    _check(isinstance(inp.get("name"), str) and isinstance(out.get("name"), str), "input/output need a name")
    reject = out.get("reject", "")
    _check(reject == "" or reject in labels, f"output reject {reject!r} is not one of the labels")
    shape = inp.get("shape")
    _check(isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:])
           and (isinstance(shape[0], str) or (isinstance(shape[0], int) and shape[0] > 0)),
           "input shape must be [batch, C, H, W]")
    color = inp.get("color")
    _check(color in COLORS, f"input color must be one of {COLORS}")
    size = pre.get("size")
    _check(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size),
           "preprocess size must be [width, height]")
    mean, std = pre.get("mean"), pre.get("std")
    channels = shape[1]
    for name, vals in (("mean", mean), ("std", std)):
        _check(isinstance(vals, list) and len(vals) == channels and all(isinstance(v, (int, float)) for v in vals),
               f"preprocess {name} needs one number per input channel ({channels})")
    _check(all(s > 0 for s in std), "preprocess std must be positive")
    _check(channels == (1 if color == "gray" else 3), f"color {color!r} does not fit {channels} input channels")
    _check(shape[2:] == [size[1], size[0]], "preprocess size does not match the input shape")
    _check(pre.get("swap_rb", color == "rgb") == (color == "rgb"), "swap_rb contradicts the input color")
    fit = pre.get("fit", "resize")
    _check(fit in FITS, f"preprocess fit must be one of {FITS}")
    shorter = pre.get("resize_shorter", 0)
    _check(isinstance(shorter, int) and not isinstance(shorter, bool) and (shorter == 0 or shorter >= max(size)),
           "preprocess resize_shorter must be 0 or at least the input size")
    return ModelInfo(
        labels=tuple(labels),
        input_name=inp["name"],
        input_shape=tuple(shape),
        output_name=out["name"],
        preprocess=Preprocess(width=size[0], height=size[1], mean=tuple(float(v) for v in mean),
                              std=tuple(float(v) for v in std), color=color, fit=fit, resize_shorter=shorter),
        provenance=prov,
        reject=reject,
    )


def _json(props: dict[str, str], key: str, kind: type):
    if key not in props:
        raise ModelError(f"metadata lacks {key!r}")
    try:
        value = json.loads(props[key])
    except (json.JSONDecodeError, TypeError):
        raise ModelError(f"metadata {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise ModelError(f"metadata {key!r} must be a JSON {kind.__name__}")
    return value


def _check(ok, message: str) -> None:
    if not ok:
        raise ModelError(f"metadata: {message}")
