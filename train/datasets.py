"""What each dataset is: labels, image geometry and normalisation, defined once.

The training transform and the exported ONNX metadata are both derived from these
specs, so the runtime's preprocessing cannot drift from what the model was trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from digitpipe.runtime.metadata import Preprocess


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    labels: tuple[str, ...]
    # How the runtime fits a photo to the input, exactly as training prepares images: the
    # preprocessing half of the ONNX metadata contract, defined once (runtime/metadata.py).
    preprocess: Preprocess
    augment: str = "digits"  # digits | crop_flip | resized_crop (train/augment.py)
    source: str = ""  # imagefolder: the folder with train/ and val/
    # The label of an extra last class for ink that is no digit (train/negatives.py), or "".
    reject: str = ""

    @property
    def size(self) -> int:
        return self.preprocess.width  # training inputs are square

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        """From a checkpoint's "dataset", this layout's or the older flat one (size, channels,
        mean, std, fit, resize_shorter beside the name; and "ink", which nothing read)."""
        pp = d.get("preprocess") or _flat_preprocess(d)
        pp = Preprocess(**{**pp, "mean": tuple(pp["mean"]), "std": tuple(pp["std"])})
        names = {f.name for f in fields(cls)} - {"preprocess"}
        return cls(preprocess=pp, **{k: (tuple(v) if k == "labels" else v) for k, v in d.items() if k in names})


def _flat_preprocess(d: dict) -> dict:
    return {"width": d["size"], "height": d["size"], "mean": d["mean"], "std": d["std"],
            "color": "gray" if d["channels"] == 1 else "rgb", "fit": d["fit"],
            "resize_shorter": d.get("resize_shorter", 0)}


def _square(size: int, mean: tuple, std: tuple, fit: str, resize_shorter: int = 0) -> Preprocess:
    return Preprocess(width=size, height=size, mean=mean, std=std, color="gray" if len(mean) == 1 else "rgb",
                      fit=fit, resize_shorter=resize_shorter)


MNIST = DatasetSpec(
    name="mnist",
    labels=tuple(str(d) for d in range(10)),
    preprocess=_square(28, mean=(0.1307,), std=(0.3081,), fit="digit"),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    labels=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    preprocess=_square(28, mean=(0.2860,), std=(0.3530,), fit="resize", resize_shorter=28),
    augment="crop_flip",
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    labels=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    preprocess=_square(32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), fit="resize",
                       resize_shorter=32),
    augment="crop_flip",
)

NO_DIGIT = "no digit"


def with_reject_class(spec: DatasetSpec) -> DatasetSpec:
    """The spec with an extra last class for generated non-digit ink; only a digit reader
    (fit "digit") finds ink that may be no digit at all."""
    if spec.preprocess.fit != "digit" or spec.reject:
        return spec
    return replace(spec, labels=spec.labels + (NO_DIGIT,), reject=NO_DIGIT)


SPECS = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10)}
IMAGEFOLDER = "imagefolder:"


def imagefolder_spec(folder: str, image_size: int = 0) -> DatasetSpec:
    """Any folder with train/<class>/ and val/<class>/ images: classes are the subfolder names."""
    train = Path(folder) / "train"
    if not train.is_dir() or not (Path(folder) / "val").is_dir():
        raise ValueError(f"{folder}: an image folder needs train/ and val/ subfolders, one folder per class in each")
    labels = tuple(sorted(p.name for p in train.iterdir() if p.is_dir()))
    if len(labels) < 2:
        raise ValueError(f"{train}: needs at least two class subfolders, found {len(labels)}")
    size = image_size or 224
    return DatasetSpec(name="imagefolder", labels=labels,
                       preprocess=_square(size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), fit="resize",
                                          resize_shorter=round(size * 256 / 224)),
                       augment="resized_crop", source=str(folder))


def get_spec(name: str, image_size: int = 0) -> DatasetSpec:
    if name.startswith(IMAGEFOLDER):
        return imagefolder_spec(name[len(IMAGEFOLDER):], image_size)
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(SPECS)} or imagefolder:PATH") from None
