"""Real photographs with no digit in them, for the ink detector's training scenes.

Generated backgrounds teach the detector what paper, light and clutter look like; real
photographs (leaves, grass, water, wood, boats, a forest, cups, flowers, sky) hold the
edges, textures and thin dark structures that generated noise lacks, and none of them is
digit ink. They come from Debian's desktop wallpaper packages, which a registry ships
(DEBIAN_PACKAGES; `python -m digitpipe.train.real_photos install` puts them in place when
run as root). Where none is installed the detector trains on generated backgrounds alone
and says so. bench.wild's photographs are another source (scikit-image's samples), never
shown to training.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

DEBIAN_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
FOLDERS = ("/usr/share/wallpapers", "/usr/share/backgrounds/mate")
SIDE = 640  # the longer side they are kept at: a frame's size, the scale crops are taken from
LOAD_SIDE = 1280  # each wallpaper's smallest copy at least this long is read (the big ones are slow to decode)


def photo_files(folders=FOLDERS) -> list[Path]:
    """One file per wallpaper, sorted (every machine with the packages draws the same scenes).
    KDE's wallpapers come in several sizes (contents/images/WxH.*): the smallest at least
    LOAD_SIDE long is taken; previews (screenshot.*) and dark variants are skipped."""
    chosen: dict[Path, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or path.stem == "screenshot":
                continue
            if path.parent.name == "images_dark" or re.search(r"_\d+x\d+$", path.stem):
                continue  # dark variants, and the same picture again at another size
            key = path.parent if path.parent.name == "images" else path
            if key not in chosen or _better(path, chosen[key]):
                chosen[key] = path
    return sorted(chosen.values())


def _side(path: Path) -> int:
    """The width a KDE copy's name gives (WxH): landscape copies are wider than phone ones."""
    try:
        return int(path.stem.split("x")[0])
    except ValueError:
        return 0


def _better(path: Path, current: Path) -> bool:
    """Is path the better copy of one wallpaper: the smallest at least LOAD_SIDE long."""
    a, b = _side(path), _side(current)
    if (a >= LOAD_SIDE) != (b >= LOAD_SIDE):
        return a >= LOAD_SIDE
    return a < b if a >= LOAD_SIDE else a > b


def load_photos(folders=FOLDERS, side: int = SIDE) -> list[np.ndarray]:
    """The photographs as BGR uint8, the longer side `side` pixels; [] when none is installed."""
    photos = []
    for path in photo_files(folders):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 64:
            continue
        f = side / max(image.shape[:2])
        photos.append(cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
    return photos


def crop(photos: list[np.ndarray], rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random view of a random photograph at size (w, h): a crop of 30-100% of its
    height at the frame's aspect, mirrored half the time, its brightness and contrast moved."""
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    ch = int(h * rng.uniform(0.3, 1.0))
    cw = min(w, int(ch * size[0] / size[1]))
    y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    view = cv2.resize(photo[y : y + ch, x : x + cw], size, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    gain, offset = rng.uniform(0.7, 1.2), rng.uniform(-25, 25)
    return np.clip(view.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def install() -> int:
    """apt-get install the wallpaper packages when run as root (as `make train` does);
    otherwise say how."""
    if any(Path(f).is_dir() for f in FOLDERS):  # what load_photos reads, whatever put it there
        return 0
    missing = DEBIAN_PACKAGES
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print(f"real photographs: not installed ({' '.join(missing)}); as root: apt-get install {' '.join(missing)}. "
              "The detector trains on generated backgrounds alone.", file=sys.stderr)
        return 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    if done.returncode:
        print(f"real photographs: apt-get install {' '.join(missing)} failed; the detector trains on generated "
              "backgrounds alone.", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m digitpipe.train.real_photos", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("install", "list"), help="install: the Debian packages (as root); list: the files used")
    args = p.parse_args(argv)
    if args.action == "install":
        return install()
    for path in photo_files():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
