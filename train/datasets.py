"""What each dataset is: labels, image geometry and normalisation, defined once.

The training transform and the exported ONNX metadata are both derived from these
specs, so the runtime's preprocessing cannot drift from what the model was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    labels: tuple[str, ...]
    channels: int
    size: int  # square input side in pixels
    mean: tuple[float, ...]  # per channel, on the 0..1 pixel scale
    std: tuple[float, ...]
    # How the runtime fits an arbitrary photo to the input: "digit" = find the ink and
    # normalise it the way MNIST was made; "resize" = plain resize of the whole frame.
    fit: str
    # Polarity the network was trained on; the runtime flips photos to match.
    ink: str  # "light_on_dark" | "any"

    def to_dict(self) -> dict:
        return asdict(self)


MNIST = DatasetSpec(
    name="mnist",
    labels=tuple(str(d) for d in range(10)),
    channels=1,
    size=28,
    mean=(0.1307,),
    std=(0.3081,),
    fit="digit",
    ink="light_on_dark",
)

SPECS = {spec.name: spec for spec in (MNIST,)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(SPECS)}") from None
