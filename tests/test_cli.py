"""run-digit on a freshly trained and exported model: how well it reads (real files, real
backends). What does not depend on accuracy runs on the stand-in model in test_cli_fast.py."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from digitpipe.train.photos import render_photo
from digitpipe.runtime.cli import EXIT_OK
from tests.conftest import write_png
from tests.test_cli_fast import json_lines, run_cli, write_video

pytestmark = pytest.mark.slow
BACKENDS = ["onnxruntime", "opencv"]


@pytest.fixture(scope="module")
def samples(mnist_test, tmp_path_factory):
    """MNIST test tiles and photos of them written to disk, with their labels."""
    images, labels = mnist_test
    folder = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(7)
    picks = rng.choice(len(images), 20, replace=False)
    tiles, photos = [], []
    for i in picks:
        tiles.append((write_png(folder / f"tile_{i}.png", images[i]), str(labels[i])))
        photo = render_photo([images[i]], rng)
        path = folder / f"photo_{i}.jpg"
        cv2.imwrite(str(path), photo)
        photos.append((path, str(labels[i])))
    numbers = []
    for k in range(5):
        idx = rng.choice(len(images), int(rng.integers(2, 5)), replace=False)
        path = folder / f"number_{k}.png"
        cv2.imwrite(str(path), render_photo([images[i] for i in idx], rng))
        numbers.append((path, "".join(str(labels[i]) for i in idx)))
    return {"tiles": tiles, "photos": photos, "numbers": numbers}


def correct_share(results, expected):
    by_source = {r["source"]: r["text"] for r in results}
    return np.mean([by_source[str(p)] == text for p, text in expected])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_tiles_photos_and_numbers(exported, samples, capsys, backend):
    model, _ = exported
    for kind, floor in (("tiles", 0.9), ("photos", 0.85), ("numbers", 0.6)):
        items = samples[kind]
        code, out, err = run_cli(capsys, "--model", str(model), "--backend", backend, "--json",
                                 "--image", *[str(p) for p, _ in items])
        assert code == EXIT_OK, err
        results = json_lines(out)
        assert len(results) == len(items)
        for r in results:
            assert set(r) >= {"source", "text", "digits"}
            assert all(set(d) >= {"label", "confidence", "box"} for d in r["digits"])
        assert correct_share(results, items) >= floor, (kind, backend, out)


def test_both_backends_agree(exported, samples, capsys):
    model, _ = exported
    paths = [str(p) for p, _ in samples["photos"] + samples["numbers"]]
    readings = {}
    for backend in BACKENDS:
        code, out, _ = run_cli(capsys, "--model", str(model), "--backend", backend, "--json", "--image", *paths)
        assert code == EXIT_OK
        readings[backend] = [(r["text"], [round(d["confidence"], 3) for d in r["digits"]]) for r in json_lines(out)]
    assert readings["onnxruntime"] == readings["opencv"]


def test_single_reads_the_most_prominent_digit(exported, mnist_test, tmp_path, capsys):
    model, _ = exported
    images, labels = mnist_test
    rng = np.random.default_rng(3)
    big, small = 0, 1  # label 7 big, label 2 small
    photo = render_photo([images[small]], rng, digit_height=60)
    big_ink = render_photo([images[big]], rng, digit_height=300)
    photo = np.minimum(photo, big_ink)
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), photo)
    code, out, _ = run_cli(capsys, "--model", str(model), "--json", "--single", "--image", str(path))
    assert code == EXIT_OK and json_lines(out)[0]["text"] == str(labels[big])


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_file_frame_by_frame(exported, mnist_test, tmp_path, capsys, backend):
    model, _ = exported
    images, labels = mnist_test
    rng = np.random.default_rng(5)
    first, second = 0, 1
    frames = [render_photo([images[first]], rng) for _ in range(6)] + [render_photo([images[second]], rng) for _ in range(6)]
    video = write_video(tmp_path / "clip.avi", frames)
    code, out, err = run_cli(capsys, "--model", str(model), "--backend", backend, "--json", "--video", str(video))
    assert code == EXIT_OK, err
    results = json_lines(out)
    assert [r["frame"] for r in results] == list(range(12))
    texts = [r["text"] for r in results]
    assert texts[:6].count(str(labels[first])) >= 5 and texts[6:].count(str(labels[second])) >= 5, texts


def paper(rng, h=480, w=640, shade=210):
    yy, xx = np.mgrid[0:h, 0:w]
    p = shade + 30 * (xx / w) - 25 * (yy / h) + rng.normal(0, 3, (h, w))
    return np.clip(p, 0, 255).astype(np.uint8)


def nines_not_from_mnist(folder: Path):
    """Photos of a 9 no MNIST writer made: marker, thin pen, printed fonts, chalk, small and rotated."""
    rng = np.random.default_rng(0)
    out = []
    img = paper(rng)
    cv2.ellipse(img, (320, 180), (60, 70), 0, 0, 360, 40, 14, cv2.LINE_AA)
    cv2.line(img, (378, 190), (350, 400), 40, 14, cv2.LINE_AA)
    out.append(("marker.jpg", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)))
    out.append(("phone-size.jpg", cv2.resize(out[0][1], (4032, 3024))))
    img = paper(rng, shade=190)
    cv2.ellipse(img, (300, 150), (45, 55), 10, 0, 360, 60, 3, cv2.LINE_AA)
    cv2.line(img, (343, 160), (330, 330), 60, 3, cv2.LINE_AA)
    out.append(("thin-pen.png", img))
    for i, font in enumerate([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]):
        img = paper(rng)
        cv2.putText(img, "9", (240, 360), font, 9, 30, 18, cv2.LINE_AA)
        out.append((f"font{i}.png", img))
    img = 255 - paper(rng)
    cv2.putText(img, "9", (240, 360), cv2.FONT_HERSHEY_SIMPLEX, 9, 230, 20, cv2.LINE_AA)
    out.append(("chalk.jpg", cv2.merge([img, (img * 0.8).astype(np.uint8), (img * 0.6).astype(np.uint8)])))
    img = paper(rng)
    cv2.putText(img, "9", (500, 420), cv2.FONT_HERSHEY_SIMPLEX, 3, 40, 8, cv2.LINE_AA)
    img = cv2.warpAffine(img, cv2.getRotationMatrix2D((320, 240), 8, 1.0), (640, 480), borderMode=cv2.BORDER_REPLICATE)
    img[:, :200] = (img[:, :200] * 0.6).astype(np.uint8)
    out.append(("small-rotated-shadow.jpg", img))
    paths = []
    for name, image in out:
        assert cv2.imwrite(str(folder / name), image)
        paths.append(folder / name)
    return paths


def test_photos_of_a_nine_print_nine(exported, tmp_path, capsys):
    model, _ = exported
    paths = nines_not_from_mnist(tmp_path)
    code, out, err = run_cli(capsys, "--model", str(model), "--json", "--image", str(tmp_path))
    results = json_lines(out)
    assert code == EXIT_OK and len(results) == len(paths)
    texts = [r["text"] for r in results]
    assert texts.count("9") >= len(paths) - 1, texts


