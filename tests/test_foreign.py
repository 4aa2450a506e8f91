"""run-digit on ONNX files without digitpipe metadata: flags supply the preprocessing."""
import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from digitpipe.runtime.cli import EXIT_OK, EXIT_USAGE, main
from tests.conftest import STAND_IN_READS


def run_json(capsys, *args):
    code = main(["--no-window", "--json", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture(scope="module")
def plain_digits(stand_in_model, tmp_path_factory):
    """Our stand-in digit model with its metadata stripped: what a plain torch export looks like."""
    proto = onnx.load(stand_in_model)
    del proto.metadata_props[:]
    path = tmp_path_factory.mktemp("foreign") / "plain.onnx"
    onnx.save(proto, str(path))
    return path


def test_without_metadata_or_flags_says_which_flags(plain_digits, tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    code, _, err = run_json(capsys, "--model", str(plain_digits), "--image", str(img))
    assert code == EXIT_USAGE and "--mean and --std" in err and len(err.strip().splitlines()) == 1


def test_flags_make_a_plain_model_read_like_ours(stand_in_model, plain_digits, mnist_test, tmp_path, capsys):
    from digitpipe.train.photos import render_photo

    images, _ = mnist_test
    img = tmp_path / "n.png"
    cv2.imwrite(str(img), render_photo([images[i] for i in (4, 5, 6)], np.random.default_rng(1)))
    _, ours, _ = run_json(capsys, "--model", stand_in_model, "--image", str(img))
    assert ours[0]["text"] == STAND_IN_READS * 3
    for backend in ("onnxruntime", "opencv"):
        code, theirs, err = run_json(capsys, "--model", str(plain_digits), "--backend", backend,
                                     "--mean", "0.1307", "--std", "0.3081", "--image", str(img))
        assert code == EXIT_OK, err
        assert theirs[0]["text"] == ours[0]["text"]
        for a, b in zip(theirs[0]["digits"], ours[0]["digits"]):
            assert a["box"] == b["box"] and abs(a["confidence"] - b["confidence"]) < 1e-3
    code, named, _ = run_json(capsys, "--model", str(plain_digits), "--mean", "0.1307", "--std", "0.3081",
                              "--labels", "zero,one,two,three,four,five,six,seven,eight,nine,blob", "--image", str(img))
    names = "zero one two three four five six seven eight nine blob".split()
    assert [d["label"] for d in named[0]["digits"]] == [names[int(c)] for c in ours[0]["text"]]


def test_colour_model_gets_rgb_per_channel_normalisation(tmp_path, capsys):
    """A 3-channel 5-class model: run-digit's reading must equal torch on the same preprocessing."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    path = tmp_path / "colour.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), input_names=["image"], output_names=["scores"],
                      dynamo=False, opset_version=18)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    img = tmp_path / "c.png"
    cv2.imwrite(str(img), photo)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    code, out, err = run_json(capsys, "--model", str(path), "--image", str(img), "--rgb", "--min-confidence", "0",
                              "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3", "--labels", "a,b,c,d,e")
    assert code == EXIT_OK, err
    rgb = cv2.resize(photo, (32, 32), interpolation=cv2.INTER_AREA)[:, :, ::-1] / 255.0
    x = torch.tensor(((rgb - mean) / std).transpose(2, 0, 1)[None], dtype=torch.float32)
    probs = torch.softmax(net(x), 1)[0]
    digit = out[0]["digits"][0]
    assert digit["label"] == "abcde"[int(probs.argmax())] and digit["box"] == [0, 0, 90, 60]
    assert abs(digit["confidence"] - float(probs.max())) < 1e-3
