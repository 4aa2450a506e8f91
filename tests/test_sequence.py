"""The sequence reader: trained with CTC on strips of touching MNIST training digits, exported
and verified on both backends, run by the reader on wide ink the classifier doubts whole."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from digitpipe.runtime.cli import EXIT_OK, EXIT_USAGE, main
from digitpipe.runtime.digits import fit_strip
from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.model import Model
from digitpipe.runtime.sequence import SequenceReader, ctc_greedy
from tests.conftest import DATA_DIR, SEED

# A short run of the shipped recipe. CTC's loss starts near 29 a strip (every path equally
# likely); 200 steps bring it below 2 (measured 1.24-1.48 at step 200 over seeds 0-3, default
# kernels, one thread), and the full 3000 steps to 0.2-0.4.
SHORT = dict(steps=200, batch_size=64, val_strips=100)
LOSS_CEILING = 3.0


@pytest.fixture(scope="session")
def sequence(tmp_path_factory):
    """(onnx path, export report, training result) of a short real sequence reader run."""
    from digitpipe.export.sequence import build_parser, export_sequence
    from digitpipe.train.sequence import SequenceConfig, save_sequence, train_sequence

    folder = tmp_path_factory.mktemp("sequence")
    cfg = SequenceConfig(**SHORT, seed=SEED, data_dir=str(DATA_DIR), out=str(folder / "sequence.pt"))
    net, result = train_sequence(cfg, log=lambda *_: None)
    save_sequence(folder / "sequence.pt", net, cfg, result)
    args = build_parser().parse_args(["--checkpoint", cfg.out, "--out", str(folder / "sequence.onnx"),
                                      "--verify-strips", "60", "--data-dir", str(DATA_DIR)])
    return folder / "sequence.onnx", export_sequence(args, log=lambda *_: None), result


def test_a_short_run_learns_to_read_strips(sequence):
    _, _, result = sequence
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert first > 10 and last < LOSS_CEILING, result.history


def test_the_export_is_verified_on_both_backends_and_says_what_it_is(sequence):
    path, report, _ = sequence
    assert report["passed"] and report["same_text_as_pytorch"], report
    names = {c["name"] for c in report["comparisons"]}
    assert {"strip files: onnxruntime", "strip files: opencv", "random inputs: onnxruntime",
            "random inputs: opencv"} <= names
    assert all(c["max_abs_logit_diff"] <= report["atol"] and c["top1_agreement"] == 1.0 for c in report["comparisons"])
    assert set(report["exact_match"]) == {"pytorch", "onnxruntime", "opencv"}
    for backend in ("onnxruntime", "opencv"):
        model = Model(path, backend)
        assert model.info.kind == "sequence" and model.info.stride == 4 and model.info.preprocess.fit == "strip"
        assert model.info.output_shape == (11, 1, 28)
    assert "read exactly" in path.with_suffix(".report.md").read_text()


def test_a_failed_export_keeps_the_installed_file(sequence, tmp_path, monkeypatch, capsys):
    """A file that computes other logits than the checkpoint's network is refused, and the
    installed one stays; so does an unreadable checkpoint."""
    import copy

    import torch

    from digitpipe.export import sequence as export

    out = tmp_path / "sequence.onnx"
    shutil.copy(sequence[0], out)
    before = out.read_bytes()
    checkpoint = str(sequence[0].with_suffix(".pt"))
    exporter = export.export_sequence_onnx

    def drifted(net, opset):  # the file written is not the network verified against
        other = copy.deepcopy(net)
        with torch.no_grad():
            other.head[-1].bias.add_(0.01)
        return exporter(other, opset)

    monkeypatch.setattr(export, "export_sequence_onnx", drifted)
    args = ["--out", str(out), "--verify-strips", "5", "--data-dir", str(DATA_DIR)]
    assert export.main(["--checkpoint", checkpoint, *args]) == 1
    assert "verification failed" in capsys.readouterr().err and out.read_bytes() == before
    assert out.with_suffix(".rejected.report.json").is_file()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert export.main(["--checkpoint", str(bad), *args]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err and out.read_bytes() == before


def logits_for(path: list[int], sure: float = 0.9) -> np.ndarray:
    """11 x steps logits whose best label at each step is path's (0: the blank), at probability `sure`."""
    out = np.full((11, len(path)), np.log((1 - sure) / 10))
    out[path, np.arange(len(path))] = np.log(sure)
    return out


def test_best_path_decoding_merges_repeats_and_splits_at_blanks():
    labels = tuple("0123456789")
    seq = ctc_greedy(logits_for([0, 8, 8, 0, 8, 0, 0, 2, 0]), labels, stride=4)
    assert seq.text == "771"  # label k + 1 is digit k: 8 -> "7", 2 -> "1"; a blank parts the two 7s
    assert seq.columns == ((4, 12), (16, 20), (28, 32))
    assert seq.confidence == pytest.approx(0.9) and len(seq.confidences) == 3
    empty = ctc_greedy(logits_for([0] * 6, sure=0.7), labels, stride=4)
    assert empty.text == "" and empty.confidence == pytest.approx(0.7)  # how sure it is of no digit


def test_a_strip_holds_the_ink_at_mnist_height_centred_and_never_wider_than_itself():
    tall = np.zeros((40, 30), np.uint8)
    tall[:, 10:20] = 255
    strip, scale, left = fit_strip(tall, 112, 28, 20 / 28)
    rows, cols = np.flatnonzero(strip.any(1)), np.flatnonzero(strip.any(0))
    assert rows.size == 20 and scale == pytest.approx(0.5) and abs(rows[0] - (27 - rows[-1])) <= 1
    assert abs(cols[0] - (111 - cols[-1])) <= 1 and cols[0] >= left
    wide = np.full((10, 400), 255, np.uint8)
    strip, scale, left = fit_strip(wide, 112, 28, 20 / 28)
    cols = np.flatnonzero(strip.any(0))
    assert cols.size == 104 and left == 4 and np.flatnonzero(strip.any(1)).size < 20


def touching_photos(mnist_test, count: int, seed: int):
    from digitpipe.train.photos import render_photo

    images, labels = mnist_test
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        idx = rng.choice(len(images), int(rng.integers(2, 5)), replace=False)
        out.append((render_photo([images[i] for i in idx], rng, gap=(-0.15, -0.03)), "".join(str(labels[i]) for i in idx)))
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_the_bundled_reader_reads_touching_numbers_whole(mnist_test, backend):
    """Photos of 2-4 touching MNIST test digits through the bundled models. Measured (seed 5,
    40 photos, both backends): 34 read exactly with the sequence reader, 28 with cuts alone;
    every digit's box is non-empty and inside the photo, and the digits run left to right."""
    import digitpipe

    photos = touching_photos(mnist_test, 40, seed=5)
    whole = digitpipe.Reader(backend=backend)
    assert whole.sequence_path is not None and whole.sequence_path.name == "sequence.onnx"
    cut = digitpipe.Reader(backend=backend, sequence="none")
    readings = [whole.read(photo) for photo, _ in photos]
    right = sum(r.text == text for r, (_, text) in zip(readings, photos))
    right_cut = sum(cut.read(photo).text == text for photo, text in photos)
    assert right >= 30 and right >= right_cut + 4, (right, right_cut)
    for r, (photo, _) in zip(readings, photos):
        xs = [d.box[0] for d in r.digits]
        assert xs == sorted(xs)
        for x, y, w, h in (d.box for d in r.digits):
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= photo.shape[1] and y + h <= photo.shape[0]


def test_run_digit_takes_the_sequence_reader_beside_the_model_or_none(sequence, stand_in_model, tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    model = shutil.copy(stand_in_model, folder / "digits.onnx")
    photo = tmp_path / "page.png"
    cv2.imwrite(str(photo), np.full((120, 160, 3), 220, np.uint8))
    shutil.copy(sequence[0], folder / "sequence.onnx")
    for choice in ("auto", "none", str(folder / "sequence.onnx")):
        assert main(["--no-window", "--json", "--model", str(model), "--sequence", choice, "--image", str(photo)]) == EXIT_OK
        assert json.loads(capsys.readouterr().out)["text"] == ""


def test_a_wrong_or_damaged_sequence_reader_is_one_line_and_exit_2(sequence, stand_in_model, tmp_path, capsys):
    broken = tmp_path / "sequence.onnx"
    broken.write_bytes(sequence[0].read_bytes()[:3000])
    photo = tmp_path / "page.png"
    cv2.imwrite(str(photo), np.full((60, 80, 3), 200, np.uint8))
    for choice, message in ((str(broken), str(broken)), (stand_in_model, "is not a sequence reader")):
        for backend in ("onnxruntime", "opencv"):
            assert main(["--no-window", "--model", stand_in_model, "--sequence", choice, "--backend", backend,
                         "--image", str(photo)]) == EXIT_USAGE
            err = capsys.readouterr().err
            assert err.startswith("run-digit: error:") and message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelError, match="not a sequence reader"):
        SequenceReader(Model(stand_in_model))


def test_training_refuses_bad_widths(capsys, tmp_path):
    from digitpipe.train.sequence import main as train_main

    out = tmp_path / "sequence.pt"
    assert train_main(["--widths", "16,32", "--out", str(out)]) == 2
    assert "--widths" in capsys.readouterr().err and not out.exists()


def test_a_sequence_reader_that_breaks_its_metadata_fails_in_one_line(mnist_test, tmp_path, capsys):
    """A file whose graph gives 28 steps where its metadata (stride 2) promises 56: refused at
    the first strip it reads, exit 3, one line; what it read before is kept (README: exit codes)."""
    import onnx

    from digitpipe.runtime.bundled import BUNDLED_DIR
    from digitpipe.runtime.cli import EXIT_MODEL_FAILED
    from digitpipe.train.photos import render_photo

    proto = onnx.load(str(BUNDLED_DIR / "sequence.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "output":
            prop.value = json.dumps({**json.loads(prop.value), "stride": 2})
    broken = tmp_path / "sequence.onnx"
    onnx.save(proto, str(broken))
    images, _ = mnist_test
    photo = tmp_path / "touching.png"
    cv2.imwrite(str(photo), render_photo([images[3], images[4]], np.random.default_rng(5), gap=(-0.1, -0.1)))
    model = str(BUNDLED_DIR / "digits.onnx")
    for backend in ("onnxruntime", "opencv"):
        code = main(["--no-window", "--model", model, "--sequence", str(broken), "--backend", backend, "--image", str(photo)])
        err = capsys.readouterr().err
        assert code == EXIT_MODEL_FAILED and "output 'sequence' has shape" in err and len(err.strip().splitlines()) == 1


def test_a_model_that_reads_whole_images_takes_no_sequence_reader(stand_in_model, tmp_path):
    """The detector and the sequence reader serve a classifier that finds digits: named for one
    that reads whole images (fit "resize"), either is a one-line ModelError; beside it, ignored."""
    import digitpipe
    from digitpipe.runtime.bundled import BUNDLED_DIR
    from digitpipe.runtime.foreign import Overrides

    whole_images = Overrides(fit="resize")
    for option, name in (("sequence", "sequence.onnx"), ("detector", "detector.onnx")):
        with pytest.raises(ModelError, match=f"--{option}: .* reads whole images .* serves models that find digits"):
            digitpipe.Reader(stand_in_model, overrides=whole_images, **{option: BUNDLED_DIR / name})
    model = shutil.copy(stand_in_model, tmp_path / "digits.onnx")
    for name in ("sequence.onnx", "detector.onnx"):
        shutil.copy(BUNDLED_DIR / name, tmp_path / name)
    reader = digitpipe.Reader(model, overrides=whole_images)
    assert reader.sequence_path is None and reader.detector_path is None
    assert digitpipe.Reader(model).sequence_path == tmp_path / "sequence.onnx"


def test_each_digit_read_as_a_sequence_is_boxed_at_the_columns_it_was_read_from(mnist_test):
    """Strip columns map back to the photo: a reading whose first digit comes from the left half
    of the ink and whose second from the right half gets boxes that split the ink's box there."""
    from digitpipe.runtime.bundled import BUNDLED_DIR
    from digitpipe.runtime.digits import find_ink, to_gray
    from digitpipe.runtime.reader import DigitReader
    from digitpipe.runtime.sequence import Sequence
    from digitpipe.train.photos import render_photo

    images, _ = mnist_test
    photo = render_photo([images[3], images[4]], np.random.default_rng(5), gap=(-0.1, -0.1))
    page = find_ink(to_gray(photo))
    (g,) = [g for g, (_, m) in enumerate(page.groups) if m.shape[1] > 0.6 * m.shape[0]]
    strip, scale, left = page.strip(g, 112, 28)
    cols = np.flatnonzero(strip.any(axis=0))
    middle = (cols[0] + cols[-1] + 1) // 2

    class Halves:  # reads any strip as "12", split where the ink's middle column is
        size = (112, 28)

        def read(self, strips):
            return [Sequence("12", 0.99, (0.99, 0.99), ((int(cols[0]), int(middle)), (int(middle), int(cols[-1]) + 1)))
                    for _ in strips]

    reader = DigitReader(Model(BUNDLED_DIR / "digits.onnx"), sequence=Halves())
    reading = reader.read(photo)
    assert reading.text == "12"
    (gx, gy), mask = page.groups[g]
    x, y, w, h = page.box(gx, gy, mask.shape[1], mask.shape[0])
    first, second = (d.box for d in reading.digits)
    split = x + w / 2
    assert abs(first[0] - x) <= 2 and abs(second[0] + second[2] - (x + w)) <= 2
    assert abs(first[0] + first[2] - split) <= 0.1 * w and abs(second[0] - split) <= 0.1 * w
    assert all(y <= b[1] and b[1] + b[3] <= y + h for b in (first, second))
