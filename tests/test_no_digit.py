"""Saying "no digit" rather than guessing: the reject class from the ONNX metadata to run-digit."""
from dataclasses import replace

import cv2
import numpy as np
import onnx
import pytest
import torch

from bench.photos import render_photo
from export.onnx_export import attach_metadata, export_onnx
from runtime.cli import main as run_digit
from runtime.metadata import ModelInfo, Preprocess
from runtime.model import Model
from runtime.reader import DigitReader
from tests.conftest import write_png

pytestmark = pytest.mark.slow
LABELS = tuple("0123456789") + ("no digit",)


class InkAmount(torch.nn.Module):
    """A stand-in classifier with a known rule: a tile more than a quarter ink is "no digit"
    (a blob), anything thinner is a sure 7."""

    def forward(self, x):
        ink = (x * 0.3081 + 0.1307).mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        seven = 100 * (0.25 - ink)
        zeros = torch.zeros_like(ink)
        return torch.cat([zeros] * 7 + [seven] + [zeros] * 2 + [-seven], dim=1)


@pytest.fixture(scope="module")
def rule_model(tmp_path_factory) -> str:
    info = ModelInfo(labels=LABELS, input_name="input", input_shape=("batch", 1, 28, 28), output_name="logits",
                     preprocess=Preprocess(28, 28, (0.1307,), (0.3081,), "gray", "digit"), reject="no digit")
    path = tmp_path_factory.mktemp("reject") / "rule.onnx"
    onnx.save(attach_metadata(export_onnx(InkAmount(), 1, 28), info), str(path))
    return str(path)


def blob_and_digit(mnist_test) -> np.ndarray:
    """A photo with a filled disc left of a handwritten digit, both 70 px tall (a blob wider
    than the finder's top-hat kernel, 81 px here, would be cut down to its edges)."""
    images, _ = mnist_test
    disc = np.zeros((28, 28), np.uint8)
    cv2.circle(disc, (14, 14), 10, 255, -1, cv2.LINE_AA)
    return render_photo([disc, images[0]], np.random.default_rng(2), digit_height=70)


def test_reject_class_is_never_reported(rule_model, mnist_test):
    photo = blob_and_digit(mnist_test)
    reader = DigitReader(Model(rule_model), min_confidence=0.0)
    boxes, tiles = reader.locate(photo)
    assert len(boxes) == 2  # the finder offers both: the disc is no texture, its edge is a pen's
    reading = reader.read(photo)
    assert reading.text == "7" and reading.digits[0].box == boxes[1]
    # A reader told nothing of the class would report its label like any other.
    unaware = Model(rule_model)
    unaware.info = replace(unaware.info, reject="")
    assert DigitReader(unaware, min_confidence=0.0).read(photo).text == "no digit7"


def test_run_digit_prints_no_digit_for_ink_the_model_rejects(rule_model, mnist_test, tmp_path, capsys):
    disc = np.full((480, 640, 3), 220, np.uint8)
    cv2.circle(disc, (320, 240), 35, (40, 40, 40), -1, cv2.LINE_AA)
    files = [write_png(tmp_path / "disc.png", disc), write_png(tmp_path / "both.png", blob_and_digit(mnist_test))]
    assert run_digit(["--model", rule_model, "--no-window", "--image", *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{files[0]}: no digit" and lines[1].startswith(f"{files[1]}: 7  (7 ")


def test_trained_model_turns_away_blobs_and_keeps_digits(exported, mnist_test):
    """The small model the tests train (2 epochs) already tells filled shapes from digits."""
    path, _ = exported
    reader = DigitReader(Model(path), min_confidence=0.0)
    assert reader.model.info.reject == "no digit"
    rng = np.random.default_rng(6)
    discs = []
    for _ in range(10):
        ink = np.zeros((120, 120), np.uint8)
        cv2.ellipse(ink, (60, 60), (int(rng.integers(35, 55)), int(rng.integers(35, 55))), 0, 0, 360, 255, -1)
        discs.append(render_photo([ink], rng, digit_height=70))
    assert sum(reader.read(p).text == "" for p in discs) >= 8
    images, labels = mnist_test
    digits = [render_photo([images[k]], rng) for k in range(20)]
    assert sum(reader.read(p).text == str(labels[k]) for k, p in enumerate(digits)) >= 19
