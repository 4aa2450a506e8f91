"""Fashion-MNIST, CIFAR-10 and image folders as uint8 arrays, online or not.

Fashion-MNIST: torchvision's raw folder, else the Debian package dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist), else torchvision's download.
CIFAR-10: the python version's pickled batches (cifar-10-batches-py), read with an
unpickler that can only build numpy arrays; else torchvision's download.
Image folders: every readable image, shorter side scaled and the centre cropped to a
square, exactly as the runtime does it (runtime/preprocess.py).
"""
from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.errors import first_line
from digitpipe.train.mnist_source import DataUnavailable, _NumpyOnlyUnpickler, with_download_timeout

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def ensure_fashion_mnist(root: Path, log=print) -> Path:
    """torchvision's raw IDX files for Fashion-MNIST under root/FashionMNIST/raw."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if all((raw / f).is_file() for f in FASHION_FILES):
        return raw
    if all((FASHION_DEBIAN / f"{f}.gz").is_file() for f in FASHION_FILES):
        log(f"Fashion-MNIST: from {FASHION_DEBIAN}")
        raw.mkdir(parents=True, exist_ok=True)
        for f in FASHION_FILES:
            with gzip.open(FASHION_DEBIAN / f"{f}.gz") as src, open(raw / f"{f}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (raw / f"{f}.part").replace(raw / f)
        return raw
    from torchvision.datasets import FashionMNIST

    log("Fashion-MNIST: trying torchvision download")
    try:
        with_download_timeout(lambda: [FashionMNIST(str(root), train=t, download=True) for t in (True, False)])
    except Exception as exc:  # any network failure: say where the files go instead
        raise DataUnavailable(f"Fashion-MNIST not found ({first_line(exc)}); "
                              f"install the Debian package dataset-fashion-mnist or put {', '.join(FASHION_FILES)} "
                              f"into {raw}") from None
    return raw


def load_fashion_mnist(root: Path, log=print):
    from torchvision.datasets import FashionMNIST

    ensure_fashion_mnist(root, log)
    parts = [FashionMNIST(str(root), train=t, download=False) for t in (True, False)]
    return [(p.data.numpy()[:, None], p.targets.numpy()) for p in parts]


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> (N x 3 x 32 x 32 uint8 RGB, labels)."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    except Exception as exc:  # a truncated or foreign file: name it
        raise DataUnavailable(f"{path}: not a CIFAR-10 batch ({first_line(exc)})") from None
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DataUnavailable(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load_cifar10(root: Path, log=print):
    folder = Path(root) / CIFAR_FOLDER
    names = (*CIFAR_TRAIN, "test_batch")
    if not all((folder / n).is_file() for n in names):
        from torchvision.datasets import CIFAR10

        log("CIFAR-10: trying torchvision download")
        try:
            with_download_timeout(lambda: CIFAR10(str(root), train=True, download=True))
        except Exception as exc:  # any network failure: say where the files go instead
            raise DataUnavailable(f"CIFAR-10 not found ({first_line(exc)}); unpack "
                                  f"cifar-10-python.tar.gz so that {folder}/data_batch_1..5 and test_batch exist") from None
    train = [read_cifar_batch(folder / n) for n in CIFAR_TRAIN]
    test = read_cifar_batch(folder / "test_batch")
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), test


def prepare_folder_image(image: np.ndarray, side: int) -> np.ndarray:
    """A photo as run-digit reads it -> 3 x side x side uint8 RGB: the shorter side scaled to
    side, the centre cropped (the runtime's own functions), as image folders are stored."""
    from digitpipe.runtime.preprocess import center_crop, fit_shorter_side

    image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(center_crop(fit_shorter_side(image, side), side, side).transpose(2, 0, 1))


def list_image_folder(folder: Path, labels: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """(paths, class indices) of folder/<class>/** image files, sorted: nothing is decoded."""
    from digitpipe.runtime.imageio import IMAGE_EXTENSIONS

    paths, targets = [], []
    for index, name in enumerate(labels):
        found = sorted(str(p) for p in (Path(folder) / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += found
        targets += [index] * len(found)
    return paths, np.asarray(targets, dtype=np.int64)


def load_image_folder(folder: Path, labels: tuple[str, ...], side: int, log=print, listed=None):
    """(N x 3 x side x side uint8 RGB, labels) for folder/<class>/*, decoded into memory;
    unreadable files are reported and skipped. listed: list_image_folder's answer, if known."""
    from digitpipe.runtime.errors import InputError
    from digitpipe.runtime.imageio import read_image

    images, targets = [], []
    paths, classes = listed or list_image_folder(folder, labels)
    for path, target in zip(paths, classes):
        try:
            images.append(prepare_folder_image(read_image(path), side))
            targets.append(target)
        except InputError as exc:
            log(f"skipped {exc}")
    if not images:
        raise DataUnavailable(f"{folder}: no readable images in {', '.join(labels)}")
    return np.stack(images), np.asarray(targets, dtype=np.int64)
