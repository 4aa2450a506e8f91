"""Shared fixtures: real MNIST, a quickly trained checkpoint, its verified ONNX export."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DIGITPIPE_DATA", ROOT / "data"))
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def mnist_test():
    """(images uint8 N x 28 x 28, labels) of the real MNIST test set."""
    from bench.make_photo import mnist_test_tiles

    return mnist_test_tiles(str(DATA_DIR))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A short real training run on a subset: checkpoint path and summary."""
    from train.engine import TrainConfig, run

    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(epochs=2, train_subset=12000, test_subset=2000, data_dir=str(DATA_DIR),
                      out=str(out / "digits.pt"), run_dir=str(out / "run"))
    summary = run(cfg, log=lambda *_: None)
    return Path(cfg.out), summary


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The checkpoint above exported and verified: (onnx path, report)."""
    from export.cli import build_parser, export_checkpoint

    ckpt, _ = trained
    out = tmp_path_factory.mktemp("export") / "digits.onnx"
    args = build_parser().parse_args(["--checkpoint", str(ckpt), "--out", str(out), "--data-dir", str(DATA_DIR),
                                      "--verify-images", "1000"])
    report = export_checkpoint(args, log=lambda *_: None)
    assert report["passed"], report
    return out, report


def write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), image), path
    return path
