"""Models without digitpipe metadata (a plain torchvision export, the ONNX Model Zoo's MNIST):
the preprocessing comes from flags, the input name and shape from the graph itself.
Flags also override what a digitpipe file says."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.metadata import FITS, ModelInfo, Preprocess, check_labels, check_normalisation, from_props

NEEDED = ("the model has no digitpipe metadata: give --mean and --std (0..1 pixel scale, one per input "
          "channel), and --labels, --size, --rgb or --fit where the defaults (class numbers, the graph's "
          "input size, gray or BGR, digit-finding for 1 channel) do not fit")


@dataclass(frozen=True)
class Overrides:
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None  # width, height
    rgb: bool = False
    fit: str | None = None

    def given(self) -> bool:
        return any(v not in (None, False) for v in (self.mean, self.std, self.labels, self.size, self.rgb, self.fit))


def parse_numbers(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected numbers separated by commas, e.g. 0.485,0.456,0.406") from None
    return values


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size {text!r}: expected N or WxH in pixels, e.g. 28 or 224x224")
    w = int(parts[0])
    return w, int(parts[-1])


def describe(props: dict[str, str], inputs: dict[str, tuple], outputs: dict[str, tuple], ov: Overrides) -> ModelInfo:
    """ModelInfo from the file's metadata, from flags, or from both (flags win)."""
    if "digitpipe" in props:
        info = from_props(props)
        return _apply(info, ov) if ov.given() else info
    if ov.mean is None or ov.std is None:
        raise ModelError(NEEDED)
    if not inputs or not outputs:
        raise ModelError("the graph declares no input or no output")
    name, shape = next(iter(inputs.items()))
    if len(shape) != 4 or not isinstance(shape[1], int):
        raise ModelError(f"input {name!r} has shape {list(shape)}; run-digit feeds N x C x H x W images")
    channels = shape[1]
    color = "gray" if channels == 1 else ("rgb" if ov.rgb else "bgr")
    if channels not in (1, 3):
        raise ModelError(f"input {name!r} takes {channels} channels; run-digit feeds 1 (gray) or 3 (colour)")
    size = ov.size or (shape[3], shape[2])
    if not all(isinstance(v, int) for v in size):
        raise ModelError(f"input {name!r} has no fixed size ({list(shape)}): give --size")
    out_name, out_shape = next(iter(outputs.items()))
    classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    if ov.labels is None and classes is None:
        raise ModelError(f"output {out_name!r} has no fixed class count: give --labels")
    labels = ov.labels or tuple(str(i) for i in range(classes))
    info = ModelInfo(labels=labels, input_name=name, input_shape=(shape[0], channels, size[1], size[0]),
                     output_name=out_name, provenance={"metadata": "from run-digit flags"},
                     preprocess=Preprocess(width=size[0], height=size[1], mean=_per_channel(ov.mean, channels, "--mean"),
                                           std=_per_channel(ov.std, channels, "--std"), color=color,
                                           fit=ov.fit or ("digit" if channels == 1 else "resize")))
    _check(info)
    return info


def _apply(info: ModelInfo, ov: Overrides) -> ModelInfo:
    pp = info.preprocess
    channels = pp.channels
    size = ov.size or (pp.width, pp.height)
    new_pp = replace(pp, width=size[0], height=size[1],
                     mean=_per_channel(ov.mean, channels, "--mean") if ov.mean else pp.mean,
                     std=_per_channel(ov.std, channels, "--std") if ov.std else pp.std,
                     color="rgb" if ov.rgb and channels == 3 else pp.color, fit=ov.fit or pp.fit)
    shape = (info.input_shape[0], channels, size[1], size[0])
    labels = ov.labels or info.labels
    out = replace(info, labels=labels, input_shape=shape, preprocess=new_pp,
                  reject=info.reject if info.reject in labels else "")
    _check(out)
    return out


def _per_channel(values: tuple[float, ...], channels: int, flag: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ModelError(f"{flag} needs one value, or one per input channel ({channels}); got {len(values)}")
    return values


def _check(info: ModelInfo) -> None:
    pp = info.preprocess
    if not all(math.isfinite(v) for v in pp.mean + pp.std):
        raise ModelError("--mean and --std must be finite numbers")
    check_normalisation(pp.mean, pp.std, "--mean/--std")
    check_labels(info.labels, "--labels")
    if pp.fit not in FITS:
        raise ModelError(f"--fit must be one of {FITS}")
