"""The ink detector: trained on generated scenes, exported and verified on both backends,
run by run-digit before the finder; the finder reads only near the ink it marks."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from digitpipe.runtime.cli import EXIT_OK, EXIT_USAGE, main
from digitpipe.runtime.detector import InkDetector, sure_parts
from digitpipe.runtime.digits import FinderSettings, find_digits, find_ink
from digitpipe.runtime.errors import ModelError
from digitpipe.runtime.model import Model
from digitpipe.runtime.reader import DigitReader
from tests.conftest import DATA_DIR, SEED
from digitpipe.train.photos import render_photo
from digitpipe.train.scenes import compose_scene

# A short run of the shipped recipe: enough to mark digit ink well above chance on held-out
# scenes (digit ink is about 4% of the pixels: marking everything scores an IoU of 0.04).
# 150 steps stop where learning is steep, so seeds differ widely: over seeds 0-5 and 7
# (ATEN_CPU_CAPABILITY=default, OMP_NUM_THREADS=1) its held-out IoU measured 0.30-0.54 and its
# recall 0.56-0.79 (the full 900-step run: IoU 0.66-0.71); with printed words and objects over
# the page among the scenes, over seeds 0-3, 5 and 7: IoU 0.34-0.49, recall 0.51-0.79; with the
# frame seen against its local paper (LocalPaper), over seeds 0-5 and 7: IoU 0.355-0.505,
# recall 0.524-0.780; with hard negatives mined after the first third of the steps (the recipe
# now), over seeds 0-5 and 7: IoU 0.329-0.501, recall 0.486-0.801 (mined from the first step,
# seed 3 stayed marking every pixel: IoU 0.068). The floors below (0.15, 0.35) are under half
# the lowest seed's IoU and still 4x chance.
SHORT = dict(scenes=300, steps=150, val_scenes=60)
IOU_FLOOR = 0.15
RECALL_FLOOR = 0.35


@pytest.fixture(scope="session")
def detector(tmp_path_factory):
    """(onnx path, export report, training result) of a short real detector run."""
    from digitpipe.export.detector import build_parser, export_detector
    from digitpipe.train.detector import DetectorConfig, save_detector, train_detector

    folder = tmp_path_factory.mktemp("detector")
    # Without real photographs: the wallpaper packages may or may not be installed, and the
    # verdict must not depend on it (test_real_photos.py covers them).
    cfg = DetectorConfig(**SHORT, seed=SEED, data_dir=str(DATA_DIR), out=str(folder / "detector.pt"), real_photos=False)
    net, result = train_detector(cfg, log=lambda *_: None)
    save_detector(folder / "detector.pt", net, cfg, result)
    args = build_parser().parse_args(["--checkpoint", cfg.out, "--out", str(folder / "detector.onnx"),
                                      "--verify-scenes", "18", "--data-dir", str(DATA_DIR)])
    report = export_detector(args, log=lambda *_: None)
    return folder / "detector.onnx", report, result


def test_a_short_run_learns_to_mark_digit_ink(detector):
    _, _, result = detector
    assert result.iou >= IOU_FLOOR, result
    assert result.recall >= RECALL_FLOOR, result


def test_the_export_is_verified_on_both_backends_and_says_what_it_is(detector):
    path, report, _ = detector
    assert report["passed"], report
    assert path.is_file() and path.with_suffix(".report.json").is_file()
    names = {c["name"] for c in report["comparisons"]}
    assert {"scene files: onnxruntime", "scene files: opencv", "random inputs: onnxruntime",
            "random inputs: opencv"} <= names
    assert all(c["max_abs_logit_diff"] <= report["atol"] for c in report["comparisons"])
    for backend in ("onnxruntime", "opencv"):
        model = Model(path, backend)
        assert model.info.kind == "mask" and model.info.preprocess.color == "bgr"
        assert model.info.provenance["task"] == "ink-detector"
    assert "IoU with the true digit ink" in path.with_suffix(".report.md").read_text()


def test_throughput_is_timed_on_a_batch_sized_to_the_network(detector):
    from digitpipe.export.report import THROUGHPUT_BATCH, THROUGHPUT_SECONDS, throughput_batch

    _, report, _ = detector
    for runtime, figures in report["latency"].items():
        batch = figures["throughput_batch"]
        assert batch == throughput_batch(figures["batch1_p50_ms"] / 1e3), runtime
        assert figures["images_per_s"] > 0 and 32 <= batch <= THROUGHPUT_BATCH
    # a digit tile keeps the whole batch; where 1,000 would take 10x THROUGHPUT_SECONDS, a tenth of it
    assert throughput_batch(0.1e-3) == THROUGHPUT_BATCH
    assert throughput_batch(THROUGHPUT_SECONDS / 100) == 100
    assert throughput_batch(10.0) == 32


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_the_mask_marks_the_digits_and_not_the_rules(detector, mnist_test, backend):
    """On held-out notebook pages, most of what it marks lies on digit ink, not on the rules."""
    images, _ = mnist_test
    ink_detector = InkDetector.load(detector[0], backend)
    rng = np.random.default_rng(11)
    on_ink = marked = 0
    for k in range(6):
        photo, ink = compose_scene({"ruled"}, [images[k], images[k + 6]], rng, with_ink=True)
        mask = ink_detector.ink_mask(photo)
        near_ink = cv2.dilate(cv2.resize((ink > 0.3).astype(np.uint8), mask.shape[::-1], interpolation=cv2.INTER_AREA),
                              np.ones((3, 3), np.uint8)) > 0
        on_ink += int((mask & near_ink).sum())
        marked += int(mask.sum())
    assert marked > 0 and on_ink / marked > 0.5


def test_the_finder_reads_only_near_marked_ink(mnist_test):
    images, _ = mnist_test
    photo = render_photo([images[0], images[1]], np.random.default_rng(3))
    everything = find_digits(photo)
    assert len(everything) >= 2
    x, y, w, h = everything[0].box
    mask = np.zeros(photo.shape[:2], bool)
    mask[y : y + h, x : x + w] = True  # the first digit only (marked whole: a mark inside its strokes is ink all round)
    only_first = find_digits(photo, ink_mask=cv2.resize(mask.astype(np.uint8), (160, 120)) > 0)
    assert [c.box[0] for c in only_first] and all(abs(c.box[0] - x) < w for c in only_first)
    assert find_digits(photo, ink_mask=np.zeros((120, 160), bool)) == []


def _page_with_digit(image, left=120, top=150, side=168, paper=205.0, contrast=0.8):
    """(a gray float page with one MNIST digit drawn dark at (left, top), its true ink), 640x480."""
    tile = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    page = np.full((480, 640), paper, np.float32)
    page[top : top + side, left : left + side] *= 1 - contrast * tile
    ink = np.zeros((480, 640), np.uint8)
    ink[top : top + side, left : left + side] = tile > 0.3
    return page, ink


def _mark(ink):
    """The detector's mark of exactly this ink (uint8, 640x480), at its 160x120 input size."""
    return cv2.resize(ink, (160, 120), interpolation=cv2.INTER_AREA) > 0


def test_faint_ink_near_strong_ink_is_read_whole(mnist_test):
    """Glare over half a digit: its strokes fade from 150 grey levels of contrast to 35. One
    threshold for the part keeps only the strong half; lifted, the whole digit is found.
    Measured on these 8 digits: 96-98% of the digit's box with the lift, 15-63% without."""
    images, _ = mnist_test
    x = np.arange(168)
    fade = (35 + 115 / (1 + np.exp((x - 84) / 6)))[None, :]  # left half at full contrast
    for image in images[:8]:
        tile = cv2.resize(image, (168, 168), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
        page = np.full((480, 640), 200, np.float32)
        page[150:318, 230:398] -= fade * tile
        ink = np.zeros((480, 640), np.uint8)
        ink[150:318, 230:398] = tile > 0.3
        mask = _mark(ink)
        _, _, w, h = cv2.boundingRect(ink)
        photo = page.astype(np.uint8)
        for settings, least, most in ((FinderSettings(), 0.9, 1.0), (FinderSettings(faint_share=0), 0.0, 0.75)):
            whole = [c for c in find_digits(photo, settings, mask) if not c.piece]
            assert len(whole) == 1
            _, _, bw, bh = whole[0].box
            assert least <= bw * bh / (w * h) <= most, (settings.faint_share, bw * bh / (w * h))


def _binary(found, shape) -> np.ndarray:
    """The ink a find_ink page thresholds, placed in a bool image of the working size."""
    marked = np.zeros(shape, bool)
    (ox, oy), binary = found.offset, found.ink > found.thresh_map
    marked[oy : oy + binary.shape[0], ox : ox + binary.shape[1]] = binary
    return marked


def test_a_digit_across_a_shadow_edge_is_judged_on_each_side(mnist_test):
    """A hard shadow's edge through the middle of a digit, the shaded side at 45% of the light.
    With one paper level for the context part, the shaded paper beside the strokes passes for
    ink; with the paper taken under every pixel it does not. IoU of the ink found with the true
    ink, measured on these 12 digits: 0.86-0.90 (mean 0.89) against 0.70-0.83 (mean 0.77)."""
    from digitpipe.runtime.digits import find_ink

    images, _ = mnist_test
    every_pixel, one_level = [], []
    for image in images[:12]:
        page, ink = _page_with_digit(image, left=230, paper=210.0, contrast=0.75)
        page[:, 314:] *= 0.45
        mask = _mark(ink)
        truth = cv2.resize(ink, (480, 360), interpolation=cv2.INTER_AREA) > 0  # at the finder's working size
        for settings, scores in ((FinderSettings(), every_pixel), (FinderSettings(paper_kernel=0), one_level)):
            found = find_ink(page.astype(np.uint8), settings, mask)
            assert found.scale == 0.75
            marked = _binary(found, truth.shape)
            scores.append((marked & truth).sum() / (marked | truth).sum())
    assert min(every_pixel) >= 0.8 and np.mean(every_pixel) >= 0.85
    assert np.mean(one_level) <= 0.81  # the behaviour this replaces is measurably worse


def test_a_shadows_tip_beside_a_digit_is_paper(mnist_test):
    """A shadow's wedge ending in a digit's middle, the shaded side at 60%, 45% and 30% of the
    light. Where the wedge narrows below the paper opening's width the opening drops its tip,
    which then passes for ink joined to the digit; a pixel as dark as the darkest paper within
    paper_reach is paper. Measured on these 12 digits at the three depths: the ink found away from
    the digit's own falls to 0.56-0.58 of what it is without the rule (two digits' stray ink lies
    elsewhere, about 400 pixels of it at each depth); the share of the digit's own ink found
    falls by at most 0.034 for a digit and 0.011 on average. At 30% the lit strokes are as dark as the shaded paper, and
    they stay ink: only paper within paper_delta of the darkest, with all its neighbours, goes."""
    from digitpipe.runtime.digits import find_ink

    images, _ = mnist_test
    shipped = FinderSettings().paper_reach
    assert shipped > 0
    for depth in (0.6, 0.45, 0.3):
        stray, found_share = {shipped: 0, 0.0: 0}, {shipped: [], 0.0: []}
        for image in images[:12]:
            page, ink = _page_with_digit(image, left=260, top=180, side=112, paper=210.0, contrast=0.75)
            ys, xs = np.nonzero(ink)
            wedge = np.zeros_like(page)
            cv2.fillPoly(wedge, [np.array([(640, 0), (640, 480), (int(xs.mean()), int(ys.mean()))], np.int32)], 1.0)
            page *= 1 - (1 - depth) * cv2.GaussianBlur(wedge, (0, 0), 1.0)
            truth = cv2.resize(ink, (480, 360), interpolation=cv2.INTER_AREA) > 0  # at the finder's working size
            own = cv2.dilate(truth.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            mark = _mark(cv2.dilate(ink, np.ones((13, 13), np.uint8)))  # a detector's mark covers the loops too
            for reach in stray:
                marked = _binary(find_ink(page.astype(np.uint8), FinderSettings(paper_reach=reach), mark), truth.shape)
                stray[reach] += int((marked & ~own).sum())
                found_share[reach].append((marked & truth).sum() / truth.sum())
        new, old = np.array(found_share[shipped]), np.array(found_share[0.0])
        assert stray[shipped] <= 0.65 * stray[0.0], (depth, stray)
        assert (new >= old - 0.06).all() and new.mean() >= old.mean() - 0.02, (depth, found_share)


def test_the_marked_ink_decides_polarity(mnist_test):
    """Chalk on a dark board: the marked pixels are lighter than the paper around them."""
    images, _ = mnist_test
    rng = np.random.default_rng(5)
    photo, ink = compose_scene((), [images[2]], rng, with_ink=True, light_ink=True)
    mask = _mark((ink > 0.3).astype(np.uint8))
    found = find_digits(photo, ink_mask=mask)
    assert len(found) == 1
    ys, xs = np.nonzero(ink > 0.3)
    x, y, w, h = found[0].box
    assert abs(x - xs.min()) <= 8 and abs(y - ys.min()) <= 8


def test_run_digit_uses_the_detector_beside_the_model(detector, stand_in_model, tmp_path, capsys, mnist_test):
    import shutil

    images, _ = mnist_test
    folder = tmp_path / "models"
    folder.mkdir()
    model = shutil.copy(stand_in_model, folder / "digits.onnx")
    photo = tmp_path / "page.png"
    cv2.imwrite(str(photo), np.full((480, 640, 3), 220, np.uint8))  # a blank page: nothing marked
    shutil.copy(detector[0], folder / "detector.onnx")
    for choice in ("auto", str(folder / "detector.onnx")):
        assert main(["--no-window", "--json", "--model", str(model), "--detector", choice, "--image", str(photo)]) == EXIT_OK
        reading = json.loads(capsys.readouterr().out)
        assert reading["text"] == "" and "detect" in reading["ms"]
    assert main(["--no-window", "--json", "--model", str(model), "--detector", "none", "--image", str(photo)]) == EXIT_OK
    assert "detect" not in json.loads(capsys.readouterr().out)["ms"]


def test_a_detector_and_a_classifier_are_not_mistaken_for_each_other(detector, stand_in_model, tmp_path, capsys):
    photo = tmp_path / "page.png"
    cv2.imwrite(str(photo), np.full((60, 80, 3), 200, np.uint8))
    assert main(["--no-window", "--model", str(detector[0]), "--image", str(photo)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is an ink detector, not a classifier" in err and len(err.strip().splitlines()) == 1
    assert main(["--no-window", "--model", stand_in_model, "--detector", stand_in_model, "--image", str(photo)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is a classifier, not an ink detector" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelError, match="not an ink detector"):
        InkDetector(Model(stand_in_model))


def test_a_damaged_detector_is_one_line_and_exit_2(detector, stand_in_model, tmp_path, capsys):
    broken = tmp_path / "detector.onnx"
    broken.write_bytes(detector[0].read_bytes()[:5000])
    photo = tmp_path / "page.png"
    cv2.imwrite(str(photo), np.full((60, 80, 3), 200, np.uint8))
    for backend in ("onnxruntime", "opencv"):
        assert main(["--no-window", "--model", stand_in_model, "--detector", str(broken), "--backend", backend,
                     "--image", str(photo)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("run-digit: error:") and str(broken) in err and len(err.strip().splitlines()) == 1


def test_the_int8_copy_is_verified_on_its_iou_with_the_true_ink(detector):
    path, report, _ = detector
    int8 = report["int8"]
    copy = path.with_name("detector.int8.onnx")
    assert int8["passed"] and int8["kind"] == "int8" and copy.is_file(), int8
    quality = int8["iou_with_true_ink"]
    assert set(quality) == {"pytorch", "onnxruntime", "opencv"}
    assert quality["pytorch"] - min(quality["onnxruntime"], quality["opencv"]) == pytest.approx(int8["iou_drop"])
    assert int8["iou_drop"] <= int8["max_iou_drop"]
    assert copy.stat().st_size < 0.5 * path.stat().st_size  # int8 weights
    for backend in ("onnxruntime", "opencv"):
        model = Model(copy, backend)
        assert model.info.kind == "mask" and "quantization" in model.info.provenance
    assert "IoU with the true ink within" in copy.with_suffix(".report.md").read_text()


def test_a_refused_int8_copy_keeps_the_last_good_one(detector, tmp_path, capsys, monkeypatch):
    import digitpipe.export.detector as export

    path = detector[0]
    out = tmp_path / "detector.onnx"
    kept = tmp_path / "detector.int8.onnx"
    kept.write_bytes(b"the last good INT8 copy")
    monkeypatch.setattr(export, "INT8_MAX_IOU_DROP", -1.0)  # no copy can pass
    assert export.main(["--checkpoint", str(path.with_suffix(".pt")), "--out", str(out), "--verify-scenes", "6",
                        "--data-dir", str(DATA_DIR)]) == 1
    err = capsys.readouterr().err
    assert f"verification failed; {kept} is unchanged" in err and len(err.strip().splitlines()) == 1
    assert kept.read_bytes() == b"the last good INT8 copy"
    assert out.is_file() and json.loads(out.with_suffix(".report.json").read_text())["passed"]  # the float one passed
    assert (tmp_path / "detector.int8.rejected.report.json").is_file()


def test_an_int8_copy_the_quantizer_cannot_make_is_one_line_and_keeps_the_float(detector, tmp_path, capsys,
                                                                                  monkeypatch):
    """onnxruntime's quantizer stops on a graph it cannot follow (a bare Exception, and its
    half-done model written to the working directory): one line, the float file installed,
    the last INT8 copy kept, nothing left behind."""
    import digitpipe.export.detector as export
    from digitpipe.export.quantize import quantize_int8
    from tests.test_quantize import unquantizable_onnx

    path = detector[0]
    out, kept = tmp_path / "detector.onnx", tmp_path / "detector.int8.onnx"
    kept.write_bytes(b"the last good INT8 copy")
    graph = unquantizable_onnx(120, 160)
    monkeypatch.setattr(export, "quantize_int8", lambda data, calibration, keep_float=(): quantize_int8(graph, calibration))
    monkeypatch.chdir(tmp_path)
    assert export.main(["--checkpoint", str(path.with_suffix(".pt")), "--out", str(out), "--verify-scenes", "6",
                        "--data-dir", str(DATA_DIR)]) == 1
    err = capsys.readouterr().err
    assert "error: no INT8 copy (onnxruntime could not quantize it" in err and len(err.strip().splitlines()) == 1
    assert kept.read_bytes() == b"the last good INT8 copy"
    assert json.loads(out.with_suffix(".report.json").read_text())["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.int8.onnx", "detector.onnx", "detector.report.json",
                                                          "detector.report.md"]


def test_auto_picks_the_int8_detector_beside_an_int8_classifier(detector, stand_in_model, tmp_path, capsys, mnist_test):
    import shutil

    from digitpipe.runtime.detector import detector_path

    path = detector[0]
    for name in ("digits.onnx", "digits.int8.onnx"):
        shutil.copy(stand_in_model, tmp_path / name)
    shutil.copy(path, tmp_path / "detector.onnx")
    assert detector_path("auto", tmp_path / "digits.int8.onnx") == tmp_path / "detector.onnx"  # no INT8 copy yet
    shutil.copy(path.with_name("detector.int8.onnx"), tmp_path / "detector.int8.onnx")
    assert detector_path("auto", tmp_path / "digits.int8.onnx") == tmp_path / "detector.int8.onnx"
    assert detector_path("auto", tmp_path / "digits.onnx") == tmp_path / "detector.onnx"
    assert detector_path("none", tmp_path / "digits.int8.onnx") is None
    images, _ = mnist_test
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), render_photo([images[0]], np.random.default_rng(0)))
    assert main(["--no-window", "--json", "--model", str(tmp_path / "digits.int8.onnx"), "--image", str(photo)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_video_bench_reads_each_way_the_files_beside_the_model_allow(detector, stand_in_model, tmp_path):
    import shutil

    from bench.__main__ import video_setups
    from digitpipe.runtime.bundled import BUNDLED_DIR

    model = tmp_path / "digits.onnx"
    shutil.copy(stand_in_model, model)
    assert [name for _, name, *_ in video_setups(model)] == ["rules alone"] * 2
    shutil.copy(detector[0], tmp_path / "detector.onnx")
    shutil.copy(detector[0].with_name("detector.int8.onnx"), tmp_path / "detector.int8.onnx")

    def ways():
        return {(b, n): (c.name, d and d.name, s and s.name) for b, n, c, d, s, _ in video_setups(model)}

    assert ways()[("opencv", "INT8 detector")] == ("digits.onnx", "detector.int8.onnx", None)
    shutil.copy(stand_in_model, tmp_path / "digits.int8.onnx")
    assert ways()[("onnxruntime", "INT8 classifier and detector")] == ("digits.int8.onnx", "detector.int8.onnx", None)
    assert ways()[("onnxruntime", "ink detector")] == ("digits.onnx", "detector.onnx", None)
    assert ways()[("onnxruntime", "rules alone")] == ("digits.onnx", None, None) and len(ways()) == 8
    checks = {n: f.run_on for b, n, *_, f in video_setups(model) if b == "opencv"}
    assert checks.pop("ink detector, no run-on check") == 0 and set(checks.values()) == {FinderSettings().run_on} != {0}
    shutil.copy(BUNDLED_DIR / "sequence.onnx", tmp_path / "sequence.onnx")
    assert ways()[("opencv", "ink detector")] == ("digits.onnx", "detector.onnx", "sequence.onnx")
    assert ways()[("opencv", "ink detector, no sequence reader")] == ("digits.onnx", "detector.onnx", None)
    assert ways()[("opencv", "INT8 classifier and detector")][2] == "sequence.onnx" and len(ways()) == 10


def test_a_failed_detector_export_keeps_the_installed_file(detector, tmp_path, capsys):
    from digitpipe.export.detector import main as export_main

    bad = tmp_path / "detector.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "detector.onnx"
    out.write_bytes(detector[0].read_bytes())
    assert export_main(["--checkpoint", str(bad), "--out", str(out)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert out.read_bytes() == detector[0].read_bytes()


def test_training_refuses_unknown_families(capsys, tmp_path):
    from digitpipe.train.detector import main as train_main

    assert train_main(["--exclude", "ruled,moon", "--out", str(tmp_path / "d.pt"), "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err
    assert "unknown scene families ['moon']" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize("args", [["--hard-negatives", "-1"], ["--mine-after", "1.5"]])
def test_training_refuses_a_loss_it_cannot_run(args, capsys, tmp_path):
    from digitpipe.train.detector import main as train_main

    assert train_main([*args, "--out", str(tmp_path / "d.pt"), "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --hard-negatives") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.pt").exists()


def test_only_parts_the_detector_is_sure_of_somewhere_count():
    logits = np.full((12, 16), -5.0, np.float32)
    logits[1:4, 1:4] = 0.5  # unsure everywhere: dropped
    logits[6:10, 6:12] = 1.0
    logits[8, 9] = 4.0  # one sure pixel keeps its whole part
    mask = sure_parts(logits, sure=3.0)
    assert not mask[1:4, 1:4].any()
    assert mask[6:10, 6:12].all() and mask.sum() == 24
    assert not sure_parts(np.full((5, 5), -1.0, np.float32)).any()


def test_a_digit_marked_only_weakly_is_read_only_when_sure(mnist_test, monkeypatch):
    """Ink in deep shade is marked as weakly as a photograph's texture: some logit past WEAK,
    none past SURE. The reader reads such a part, but a digit found only there counts when the
    classifier is WEAK_CONFIDENCE sure of it; where the detector is sure, as before. The bundled
    classifier and detector, the detector's logits set over the digit's ink."""
    from digitpipe.runtime import reader as reader_module
    from digitpipe.runtime.bundled import BUNDLED_DIR
    from digitpipe.runtime.detector import SURE, WEAK

    images, labels = mnist_test
    page, ink = _page_with_digit(images[0])
    photo = cv2.cvtColor(page.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    detector = InkDetector.load(BUNDLED_DIR / "detector.onnx")
    reader = DigitReader(Model(BUNDLED_DIR / "digits.onnx"), detector=detector)

    def read(level: float) -> str:
        logits = np.where(_mark(ink), level, -5.0).astype(np.float32)
        monkeypatch.setattr(detector, "logits", lambda image: logits)
        return reader.read(photo).text

    weak, sure, below = (WEAK + SURE) / 2, SURE + 1, WEAK - 0.5
    assert read(weak) == read(sure) == str(labels[0])  # the classifier: 0.968 sure of this digit
    assert read(below) == ""
    monkeypatch.setattr(reader_module, "WEAK_CONFIDENCE", 1.01)  # no reading is this sure
    assert read(weak) == "" and read(sure) == str(labels[0])


def test_generic_randomisation_keeps_the_ink_target_with_the_page(mnist_test):
    """Light and backgrounds no family names: the page moves and the target moves with it."""
    from digitpipe.train.detector import make_scenes

    images, _ = mnist_test
    x, y = make_scenes(12, 4, images[:50], np.zeros((5, 28, 28), np.uint8), generic=True)
    assert x.shape == (12, 3, 120, 160) and y.shape == (12, 1, 120, 160)
    assert 0.002 < y.float().mean() < 0.2  # digit ink, a small share of each frame


def test_scenes_are_the_same_whatever_the_number_of_processes_drawing_them(mnist_test):
    """Training data must not depend on the machine's core count: each chunk has its own seed."""
    from digitpipe.train.detector_scenes import draw_scenes

    images, _ = mnist_test
    others = np.zeros((5, 28, 28), np.uint8)
    alone = draw_scenes(20, 7, images[:50], others, generic=True, workers=1)
    pooled = draw_scenes(20, 7, images[:50], others, generic=True, workers=2)
    assert alone[0].shape == (20, 120, 160, 3) and alone[1].shape == (20, 120, 160)
    assert np.array_equal(alone[0], pooled[0]) and np.array_equal(alone[1], pooled[1])
    assert not np.array_equal(alone[0], draw_scenes(20, 8, images[:50], others, workers=1)[0])


def test_colour_curves_vary_hue_and_keep_ink_apart_from_paper():
    """Papers and inks of any hue, but ink and paper always differ in brightness (the target stays visible)."""
    from digitpipe.train.detector_scenes import colour_curves

    page = np.full((40, 40, 3), 210, np.uint8)
    page[10:30, 18:22] = 50  # a stroke
    papers = []
    for seed in range(60):
        out = colour_curves(page, np.random.default_rng(seed))
        gray = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(int)
        assert abs(gray[0, 0] - gray[20, 20]) >= 48, seed
        papers.append(out[0, 0].astype(int))
    papers = np.array(papers)
    assert (papers.max(axis=1) - papers.min(axis=1) > 60).mean() > 0.5  # most pages are clearly coloured
    assert papers.std(axis=0).min() > 30  # in every channel


def test_veiling_light_adds_light_and_takes_contrast_where_it_falls():
    """Added light never darkens and washes ink toward its paper: over many draws its extent
    ranges from part of the frame to all of it, and where it is strong the ink is faint, yet
    never so faint that it cannot be seen (it stays marked as ink)."""
    from digitpipe.train.detector_scenes import VEIL_MAX, veiling_light

    paper, ink = np.full((120, 160, 3), 200, np.uint8), np.full((120, 160, 3), 40, np.uint8)
    lit_shares, faintest = [], 255
    for seed in range(40):  # the same light over a page of paper and a page of ink: the contrast at every pixel
        lit_paper, lit_ink = (veiling_light(p, np.random.default_rng(seed)).astype(int) for p in (paper, ink))
        assert (lit_paper >= paper).all() and (lit_ink >= ink).all()
        contrast = lit_paper - lit_ink
        assert (contrast <= 161).all()  # 160 before, a grey level of float32 rounding aside
        lit_shares.append((lit_paper[..., 0] - 200 > 20).mean())
        faintest = min(faintest, int(contrast.min()))
    assert min(lit_shares) < 0.6 and max(lit_shares) > 0.9  # a patch in some draws, the frame in others
    assert 255 - 40 - VEIL_MAX <= faintest < 70  # washed well toward the paper somewhere, but still there


def _printed_beside(tiles, seed: int, draw):
    """(pixels the print changed, the digits' ink) of one scene drawn with and without `draw`;
    the print never enters the ink target."""
    plain, ink = compose_scene((), tiles, np.random.default_rng(seed), with_ink=True)
    printed, printed_ink = compose_scene((), tiles, np.random.default_rng(seed), with_ink=True, furniture=[draw])
    assert np.array_equal(ink, printed_ink)
    return np.abs(printed.astype(int) - plain.astype(int)).max(axis=2) > 40, ink


def test_printed_structure_prints_on_the_page_not_in_the_ink_target(mnist_test):
    from digitpipe.train.detector_scenes import printed_structure

    images, _ = mnist_test
    for seed in range(6):
        changed, ink = _printed_beside(list(images[:3]), seed, printed_structure)
        assert changed[ink == 0].sum() > 100, seed  # print away from the digits, outside the target


def test_printed_words_stay_off_the_digits_and_out_of_the_target(mnist_test):
    from digitpipe.train.detector_scenes import printed_text

    images, _ = mnist_test
    printed_somewhere = 0
    for seed in range(8):
        changed, ink = _printed_beside(list(images[:3]), seed, printed_text)
        assert not (changed & (ink > 0.3)).any(), seed  # never over a stroke
        printed_somewhere += changed.sum() > 200
    assert printed_somewhere >= 4


def test_ink_that_runs_on_beyond_the_mark_is_no_digit(mnist_test):
    """A pen across the page and a drawn face's outline, each marked by the detector only in
    part (a stroke's length of each): the part runs on beyond the mark in ink as dark and as
    wide as the digit's, so it is no digit (FinderSettings.run_on); the digit, marked whole,
    is read. Without the check each marked part is a group of its own; the pen's, which runs
    on in a straight line, is also taken whole by the erasing of pens (erase_pens)."""
    images, _ = mnist_test
    for image in images[:6]:
        page, ink = _page_with_digit(image)
        others = np.zeros_like(ink)
        cv2.line(others, (360, 60), (600, 420), 1, 11)  # the pen
        cv2.ellipse(others, (470, 330), (80, 80), 0, 0, 360, 1, 11)  # the face's outline
        page[others > 0] = 40
        part = np.zeros_like(ink)
        part[60:170, 360:440] = others[60:170, 360:440]  # the pen's top end
        part[300:420, 380:420] = others[300:420, 380:420]  # the outline's left side
        mark = _mark(ink | part)
        photo = page.astype(np.uint8)
        kept = [c.box for c in find_digits(photo, ink_mask=mark) if not c.piece]
        unchecked = [c.box for c in find_digits(photo, FinderSettings(run_on=0, erase_pens=False), mark) if not c.piece]
        erased = [c.box for c in find_digits(photo, FinderSettings(run_on=0), mark) if not c.piece]
        assert len(kept) == 1 and kept[0][0] < 300, kept  # the digit alone
        assert len(unchecked) == 3, unchecked  # the digit, the pen's end, the outline's side
        assert len(erased) == 2 and kept[0] in erased, erased  # the pen's end erased whole, the outline's side not straight


def _pen_share(found, pen, ink=None) -> list[tuple[int, int]]:
    """(pixels on the pen, pixels) of each group found (find_ink) on a 640x480 page; with ink
    (the digits'), only the pen's pixels that are no digit's."""
    work_size = (round(640 * found.scale), round(480 * found.scale))
    work_pen = cv2.resize(pen & (1 - ink) if ink is not None else pen, work_size, interpolation=cv2.INTER_NEAREST) > 0
    ox, oy = found.offset
    return [(int((m & work_pen[oy + y : oy + y + m.shape[0], ox + x : ox + x + m.shape[1]]).sum()), int(m.sum()))
            for (x, y), m in found.groups]


def test_a_pen_touching_a_digit_is_erased_from_it(mnist_test):
    """A pen lying on the page with its tip in a digit: the detector marks the digit and the
    pen where it lies over it, not the rest of the pen. The pen runs on from the group in a
    straight line, so it is erased from the group, followed in to its tip
    (FinderSettings.erase_pens); without the erasing the group holds the pen's end. The pen is
    at least as wide as the digit's strokes (what runs on thinner than 0.7x them is a printed
    line). The run-on check is off here: it still counts the pen, and a pen running on as far
    as this one drops the digit."""
    images, _ = mnist_test
    for image in images[:6]:
        page, ink = _page_with_digit(image)
        pen = np.zeros_like(ink)
        cv2.line(pen, (210, 240), (600, 40), 1, 15)  # from the digit's middle to the page's corner
        page[pen > 0] = 40
        seen = ink & (1 - pen)
        box = np.zeros_like(ink)
        box[150:318, 120:288] = 1  # the digit's square
        mark = _mark(seen | (pen & box))
        photo = page.astype(np.uint8)
        for erase in (True, False):
            found = find_ink(photo, FinderSettings(erase_pens=erase, run_on=0), mark)
            shares = _pen_share(found, pen)
            assert len(shares) == 1, shares
            (on_pen, size), = shares
            if erase:  # the digit, without the pen (but for a few pixels of its blurred edge)
                assert on_pen <= 0.05 * size, shares
                work_size = (round(640 * found.scale), round(480 * found.scale))
                assert size >= 0.6 * (cv2.resize(seen, work_size, interpolation=cv2.INTER_NEAREST) > 0).sum()
            else:
                assert on_pen > 0.1 * size, shares


def test_a_pen_across_a_digit_marked_with_it_is_erased(mnist_test):
    """A pen lying across a digit, marked by the detector along with the digit (it never
    leaves the mark, so erase_pens cannot see it): a straight bar longer than 1.5x the page's
    group height, erased from the group (FinderSettings.erase_bars) but where the digit's
    strokes cross it. A pen alone, marked, was the bar and is dropped. Measured on these 6
    digits: 6-20% of the group is pen (off the digit's ink: the crossings kept) with the
    erasing, 49-77% without; the digits alone keep exactly the groups they had."""
    images, _ = mnist_test
    for image in images[:6]:
        page, ink = _page_with_digit(image)
        alone = page.astype(np.uint8)
        pen = np.zeros_like(ink)
        cv2.line(pen, (60, 250), (470, 215), 1, 13)  # through the digit's middle, well past both sides
        cv2.line(pen, (360, 420), (620, 300), 1, 13)  # and another alone, away from it
        page[pen > 0] = 40
        photo = page.astype(np.uint8)
        erased = _pen_share(find_ink(photo, FinderSettings(), _mark(ink | pen)), pen, ink)
        kept = _pen_share(find_ink(photo, FinderSettings(erase_bars=0), _mark(ink | pen)), pen, ink)
        assert len(erased) == 1 and erased[0][0] <= 0.3 * erased[0][1], erased  # the digit, the pen's crossings
        assert len(kept) == 2 and all(on > 0.4 * size for on, size in kept), kept  # the digit with the pen, and the pen
        assert erased[0][1] >= 0.6 * (kept[0][1] - kept[0][0])  # the digit's ink stays
        plain, barred = (find_ink(alone, FinderSettings(erase_bars=e), _mark(ink)) for e in (0, 1.5))
        assert [(xy, m.tolist()) for xy, m in plain.groups] == [(xy, m.tolist()) for xy, m in barred.groups]


def test_a_digit_in_a_form_box_or_across_a_shadow_does_not_run_on(mnist_test):
    """What the check must not take: a digit touching the thin sides of a printed box (lines
    thinner than its strokes), and a digit across a hard shadow's edge (a dark area broader
    than a stroke; the shaded side at 45% of the light, as in the shadow test above), each
    marked whole by the detector. Measured on these 12 digits: all kept at 45% and at 35%; at
    25% one is dropped, as the shaded paper then comes within RUN_ON_DARK of the ink's darkness."""
    images, _ = mnist_test
    for image in images[:12]:
        page, ink = _page_with_digit(image)
        ys, xs = np.nonzero(ink)
        boxed = page.copy()
        cv2.rectangle(boxed, (int(xs.min()) - 2, int(ys.min()) - 2), (int(xs.max()) + 2, int(ys.max()) + 2), 60, 2)
        shaded = page.copy()
        shaded[:, 204:] *= 0.45  # the edge through the digit's middle
        for photo in (boxed, shaded):
            photo = photo.astype(np.uint8)
            kept = [c.box for c in find_digits(photo, ink_mask=_mark(ink)) if not c.piece]
            unchecked = [c.box for c in find_digits(photo, FinderSettings(run_on=0), _mark(ink)) if not c.piece]
            assert len(kept) == 1 and kept[0] in unchecked, (kept, unchecked)  # the digit, as before
            x, y, w, h = kept[0]
            assert w * h >= 0.8 * (xs.max() - xs.min()) * (ys.max() - ys.min())


def test_the_detector_sees_ink_against_its_local_paper(mnist_test):
    """LocalPaper: a digit in a shadow taking 70% of the light stands out from its paper almost as
    it does in full light (in the frame alone, 3.4x less); the shadow's edge and a black patch
    wider than a stroke are paper, not ink."""
    import torch

    from digitpipe.train.detector import InkNet, LocalPaper

    images, _ = mnist_test
    page = np.full((120, 160), 210.0)
    for k, x0 in enumerate((20, 100)):  # a digit in each half, strokes 2-3 pixels wide as at the detector's size
        page[40:80, x0 : x0 + 40] -= cv2.resize(images[k], (40, 40)).astype(float) * (160 / 255)
    page[90:115, 120:150] = 0  # a black patch, in the shade
    lit = torch.tensor(page / 255, dtype=torch.float32)[None, None].repeat(1, 3, 1, 1)
    shaded = lit.clone()
    shaded[..., 80:] *= 0.3
    out = LocalPaper()(shaded)
    assert out.shape == (1, 6, 120, 160) and torch.equal(out[:, :3], shaded)  # the frame, then the ratio
    ratio = out[0, 3].numpy()
    ink = [(cv2.resize(images[k], (40, 40)) > 200) for k in range(2)]
    in_light, in_shade = (ratio[40:80, x0 : x0 + 40][m].mean() for m, x0 in zip(ink, (20, 100)))
    paper_light, paper_shade = ratio[5:30, 5:75].mean(), ratio[5:30, 85:155].mean()
    # Measured: paper 1.00 on both sides, ink 0.35 in the light and 0.40 in the shade.
    assert abs(paper_light - paper_shade) < 0.02
    assert paper_shade - in_shade > max(0.5, 0.85 * (paper_light - in_light))  # ink stands out alike
    raw = shaded[0, 0].numpy()
    assert raw[5:30, 85:155].mean() - raw[40:80, 100:140][ink[1]].mean() < 0.2  # the frame alone: 0.18
    assert ratio[:, 76:84].min() > paper_shade - 0.02  # the shadow's edge is paper on both sides
    assert ratio[92:113, 122:148].min() > paper_shade - 0.02  # so is the black patch
    assert InkNet(local_paper=True)(shaded).shape == (1, 1, 120, 160)
    # Training takes the maximum over shifted copies, the export max-pools: the same numbers.
    frame = torch.rand(2, 3, 120, 160)
    pooled = torch.nn.functional.max_pool2d(frame, 7, 1, 3)
    assert torch.equal(LocalPaper()._max(frame), pooled)


def test_a_checkpoint_from_before_the_local_paper_loads_as_it_was(tmp_path):
    """Checkpoints whose config has no local_paper (the recipe before it) load without the layer."""
    import torch

    from digitpipe.train.checkpoint import save
    from digitpipe.train.detector import DetectorConfig, InkNet, load_detector

    old = InkNet(local_paper=False).eval()
    config = DetectorConfig().to_dict()
    del config["local_paper"]
    save(tmp_path / "old.pt", {"kind": "ink-detector", "model_state": old.state_dict(), "config": config})
    net, _ = load_detector(tmp_path / "old.pt")
    x = torch.rand(1, 3, 120, 160)
    assert isinstance(net.paper, torch.nn.Identity) and torch.equal(net(x), old(x))
    save(tmp_path / "new.pt", {"kind": "ink-detector", "model_state": InkNet(local_paper=True).state_dict(),
                               "config": DetectorConfig().to_dict()})
    assert load_detector(tmp_path / "new.pt")[0](x).shape == (1, 1, 120, 160)


def test_a_stroke_across_a_hole_in_the_mark_is_read_whole():
    """A drawn face whose circle the detector marks in two arcs, with holes where it is unsure:
    the ink across each hole joins the arcs, so the face is one group, read whole or not at
    all, where each arc (with an eye) read as a 6 or a 7. A printed box side across the same
    holes, a fifth of the pen's width, joins nothing."""
    page = np.full((480, 640), 210, np.uint8)
    cv2.circle(page, (320, 240), 90, 40, 10, cv2.LINE_AA)
    for eye in ((285, 210), (355, 210)):
        cv2.circle(page, eye, 10, 40, -1, cv2.LINE_AA)
    ink = (page < 125).astype(np.uint8)
    holes = np.zeros_like(ink)
    holes[130:170, 308:332] = holes[310:350, 308:332] = 1  # across the top and the bottom of the circle
    marked = _mark(ink * (1 - holes))
    with_holes = find_ink(page, FinderSettings(bridge=0), marked)
    assert len(with_holes.groups) == 2  # the two arcs, each with an eye
    whole = find_ink(page, FinderSettings(), marked)
    assert len(whole.groups) == 1
    (_, _), mask = whole.groups[0]
    assert mask.shape[0] >= 0.9 * 190 * whole.scale  # the circle's whole height

    boxed = np.full((480, 640), 210, np.uint8)
    for x in (170, 330):  # two strokes side by side, a thin box line along their tops
        cv2.line(boxed, (x, 150), (x + 100, 150), 40, 10, cv2.LINE_AA)
        cv2.line(boxed, (x + 50, 150), (x + 50, 330), 40, 10, cv2.LINE_AA)
    cv2.line(boxed, (170, 150), (430, 150), 40, 2, cv2.LINE_AA)
    ink = (boxed < 125).astype(np.uint8)
    gap = np.zeros_like(ink)
    gap[140:160, 288:312] = 1  # the thin line alone between the two marked strokes
    found = find_ink(boxed, FinderSettings(), _mark(ink * (1 - gap)))
    assert len(found.groups) == 2


def test_the_plain_loss_weighs_every_pixel_and_the_mined_one_ignores_easy_paper():
    import torch
    import torch.nn.functional as F

    from digitpipe.train.detector import POS_WEIGHT, ink_loss

    ink = torch.zeros(1, 1, 4, 10)
    ink[..., 0, :2] = 1  # two ink pixels
    logits = torch.full_like(ink, -8.0)  # blank paper the net already calls blank ...
    logits[..., 0, :2] = 1.0
    logits[..., 3, :3] = 2.0  # ... and three non-ink pixels it calls ink: a box's side, say
    plain = F.binary_cross_entropy_with_logits(logits, ink, pos_weight=torch.tensor(POS_WEIGHT))
    assert torch.allclose(ink_loss(logits, ink), plain)
    # Two ink pixels, 1x as many hardest non-ink ones: two of the three wrong ones.
    pixel = F.binary_cross_entropy_with_logits(logits, ink, pos_weight=torch.tensor(POS_WEIGHT), reduction="none")
    mined = ink_loss(logits, ink, hard_negatives=1)
    assert torch.allclose(mined, (pixel[..., 0, :2].sum() + pixel[..., 3, :2].sum()) / 4)
    # More easy paper dilutes the plain loss and leaves the mined one as it was.
    wider_ink, wider_logits = F.pad(ink, (0, 30)), F.pad(logits, (0, 30), value=-8.0)
    assert ink_loss(wider_logits, wider_ink) < 0.5 * plain
    assert torch.allclose(ink_loss(wider_logits, wider_ink, hard_negatives=1), mined)
