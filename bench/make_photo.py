"""python -m bench.make_photo OUT.png NUMBER: a photo of NUMBER in MNIST test handwriting."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from digitpipe.train.photos import render_photo


def mnist_test_tiles(data_dir: str = "data"):
    from torchvision.datasets import MNIST

    from digitpipe.train.mnist_source import ensure_mnist

    ensure_mnist(Path(data_dir), log=lambda *_: None)
    test = MNIST(data_dir, train=False)
    return test.data.numpy(), test.targets.numpy()


def photo_of(number: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A BGR photo of number written with MNIST test digits (the same photo for the same number)."""
    rng = np.random.default_rng(int(number))
    tiles = [images[rng.choice(np.flatnonzero(labels == int(d)))] for d in number]
    return render_photo(tiles, rng)


def main(argv=None) -> int:
    out, number = (argv or sys.argv[1:])[:2]
    cv2.imwrite(out, photo_of(number, *mnist_test_tiles()))
    print(f"wrote {out}: a photo of {number}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
