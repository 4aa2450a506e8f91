"""run-digit's entry point on a stand-in model (seconds, no training): exit codes, error
lines, JSON, --roi, video, speech and bad models; everything that does not depend on how
well a model reads. Accuracy floors stay with the trained fixture (test_cli.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from digitpipe.train.photos import render_photo
from digitpipe.runtime.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from digitpipe.runtime.digits import Candidate, find_digits, most_prominent
from tests.conftest import ROOT, STAND_IN_READS, write_png


def run_cli(capsys, *args):
    code = main(["--no-window", *args])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def samples(mnist_test, tmp_path_factory):
    """An MNIST test tile and a photo of it on disk, with what the stand-in reads on them."""
    images, _ = mnist_test
    folder = tmp_path_factory.mktemp("samples")
    tile = write_png(folder / "tile.png", images[0])
    photo = folder / "photo.jpg"
    assert cv2.imwrite(str(photo), render_photo([images[0]], np.random.default_rng(7)))
    return {"tiles": [(tile, STAND_IN_READS)], "photos": [(photo, STAND_IN_READS)]}


def test_json_shape_and_backends(stand_in_model, samples, capsys):
    (tile, _), (photo, _) = samples["tiles"][0], samples["photos"][0]
    for backend in ("onnxruntime", "opencv"):
        code, out, err = run_cli(capsys, "--model", stand_in_model, "--backend", backend, "--json",
                                 "--image", str(tile), str(photo))
        assert code == EXIT_OK and err == "", err
        results = json_lines(out)
        assert [r["source"] for r in results] == [str(tile), str(photo)]
        for r in results:
            assert r["text"] == STAND_IN_READS
            (digit,) = r["digits"]
            assert digit["label"] == STAND_IN_READS and 0.5 < digit["confidence"] < 1.0
            assert len(digit["box"]) == 4 and all(isinstance(v, int) for v in digit["box"])
            assert r["ms"] and all(v >= 0 for v in r["ms"].values())


def touching_rings() -> np.ndarray:
    """Four rings drawn touching: one group too wide for a digit, so only its pieces survive."""
    page = np.full((480, 640), 230, np.uint8)
    for i in range(4):
        cv2.circle(page, (170 + i * 100, 240), 52, 30, 6, cv2.LINE_AA)
    return page


def test_single_when_only_pieces_survive(stand_in_model, tmp_path, capsys):
    page = touching_rings()
    found = find_digits(page)
    assert found and all(c.piece for c in found), "the page must leave pieces without their whole"
    assert most_prominent(found) == [max(found, key=lambda c: c.area)]
    path = write_png(tmp_path / "rings.png", page)
    code = main(["--no-window", "--json", "--single", "--model", stand_in_model, "--image", str(path)])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "Traceback" not in err, err
    assert len(json.loads(out)["digits"]) <= 1


def test_single_prefers_ink_offered_whole():
    tile = np.zeros((28, 28), np.uint8)
    big_piece = Candidate((0, 0, 50, 50), tile, 900, group=0, piece=True)
    whole = Candidate((0, 0, 90, 50), tile, 800, group=0)
    alone = Candidate((100, 0, 20, 20), tile, 100)
    assert most_prominent([big_piece, whole, alone]) == [whole]
    assert most_prominent([]) == []


def test_fps_average_starts_from_the_first_frame():
    from digitpipe.runtime.cli import smoothed_fps

    fps = smoothed_fps(None, 0.01)
    assert fps == 100.0  # not a tenth of it
    for _ in range(10):
        fps = smoothed_fps(fps, 0.01)
    assert abs(fps - 100.0) < 1e-9
    assert smoothed_fps(100.0, 0.02) == 95.0  # a slower frame moves the average a tenth of the way


def test_training_scripts_without_torch_name_the_extra(tmp_path):
    """digitpipe-train/-export/-check (and the detector's and sequence reader's) in a process where
    importing torch fails: one line, exit 2."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError('torch is blocked in this test', name='torch')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT}"}
    for script in ("train", "export", "check", "train-detector", "export-sequence"):
        call = script.replace("-", "_")
        done = subprocess.run([sys.executable, "-c", f"import sys, digitpipe.train.entry as e; sys.exit(e.{call}())", "--help"],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (f"error: digitpipe-{script} needs torch, which comes with the training extra: "
                                       "pip install 'digitpipe[train]'")


def test_readable_line_per_image_and_blank_page(stand_in_model, samples, tmp_path, capsys):
    model = Path(stand_in_model)
    blank = write_png(tmp_path / "blank.png", np.full((480, 640), 220, np.uint8))
    photo, label = samples["photos"][0]
    code, out, _ = run_cli(capsys, "--model", str(model), "--image", str(photo), str(blank))
    lines = out.splitlines()
    assert code == EXIT_OK and len(lines) == 2
    assert lines[0].startswith(f"{photo}: ") and lines[1] == f"{blank}: no digit"


def test_batch_with_bad_files_reads_the_rest(stand_in_model, samples, tmp_path, capsys):
    model = Path(stand_in_model)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    good, label = samples["tiles"][0]
    code, out, err = run_cli(capsys, "--model", str(model), "--json", "--image",
                             str(tmp_path / "text.png"), str(good), str(tmp_path / "missing.png"), str(tmp_path / "empty.png"))
    assert code == EXIT_INPUT_FAILED
    results = json_lines(out)
    assert [r.get("text") for r in results] == [None, label, None, None]
    assert [r.get("error", "").split(": ")[-1] for r in results if "error" in r] == [
        "not a readable image (unknown format or corrupt data)", "no such file", "empty file"]
    assert len(err.strip().splitlines()) == 3 and "Traceback" not in err


def write_video(path: Path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_bad_video_and_camera(stand_in_model, tmp_path, capsys):
    model = Path(stand_in_model)
    (tmp_path / "notes.mp4").write_text("not a video")
    for args, message in ((["--video", str(tmp_path / "notes.mp4")], "not a readable video"),
                          (["--video", str(tmp_path / "missing.mp4")], "no such video file"),
                          (["--camera", "99"], "camera 99: cannot be opened")):
        code, out, err = run_cli(capsys, "--model", str(model), *args)
        assert code == EXIT_INPUT_FAILED and message in err and len(err.strip().splitlines()) == 1


def test_truncated_video_reads_what_is_there(stand_in_model, mnist_test, tmp_path, capsys):
    model = Path(stand_in_model)
    images, _ = mnist_test
    rng = np.random.default_rng(9)
    video = write_video(tmp_path / "clip.avi", [render_photo([images[0]], rng) for _ in range(20)])
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(capsys, "--model", str(model), "--json", "--video", str(video))
    frames = [r for r in json_lines(out) if "frame" in r]
    assert 1 <= len(frames) < 20 and "Traceback" not in err
    assert code == EXIT_INPUT_FAILED and "ended after" in err


def test_bad_models_exit_2_with_one_line(stand_in_model, tmp_path, capsys):
    import onnx

    model = Path(stand_in_model)
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    proto = onnx.load(str(model))
    plain = tmp_path / "plain.onnx"
    bare = onnx.load(str(model))
    del bare.metadata_props[:]
    onnx.save(bare, str(plain))
    broken = tmp_path / "broken.onnx"
    for p in proto.metadata_props:
        if p.key == "preprocess":
            p.value = "{not json"
    onnx.save(proto, str(broken))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    img = write_png(tmp_path / "x.png", np.zeros((28, 28), np.uint8))
    for path, message in ((tmp_path / "none.onnx", "no such model file"), (text, "not an ONNX model"),
                          (plain, "no digitpipe metadata"), (broken, "'preprocess' is not valid JSON"),
                          (truncated, "not an ONNX model"), (tmp_path, "is a folder")):
        for backend in ("onnxruntime", "opencv"):
            code, out, err = run_cli(capsys, "--model", str(path), "--backend", backend, "--image", str(img))
            assert code == EXIT_USAGE and message in err and len(err.strip().splitlines()) == 1, (path, err)


def test_speak_without_a_sound_device_warns_once_and_reads(stand_in_model, samples, capsys):
    from digitpipe.runtime.speech import playback_problem

    model = Path(stand_in_model)
    photo, label = samples["tiles"][0]
    code, out, err = run_cli(capsys, "--model", str(model), "--speak", "--image", str(photo))
    assert code == EXIT_OK and out.startswith(f"{photo}: {label}")
    if playback_problem():
        assert err.count("warning: speech is off") == 1


def test_console_script_without_torch(stand_in_model, samples, tmp_path):
    """The installed run-digit, in a process where importing torch fails."""
    model = Path(stand_in_model)
    photo, label = samples["photos"][0]
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    code = ("import sys, digitpipe.runtime.cli as c; rc = c.main(sys.argv[1:]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') "
            "or m.startswith(('digitpipe.train', 'digitpipe.export'))]; "
            "print('LOADED', bad); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT}"}
    env.pop("DISPLAY", None)
    done = subprocess.run([sys.executable, "-c", code, "--model", str(model), "--image", str(photo)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{photo}: {label}" in done.stdout and "LOADED []" in done.stdout
    exe = Path(sys.executable).with_name("run-digit")
    if exe.exists():
        done = subprocess.run([str(exe), "--model", str(model), "--image", str(photo)], capture_output=True, text=True, env=env)
        assert done.returncode == 0 and done.stdout.startswith(f"{photo}: {label}") and not done.stderr


def test_roi_reads_only_inside_and_keeps_image_coordinates(stand_in_model, mnist_test, tmp_path, capsys):
    model = Path(stand_in_model)
    images, _ = mnist_test
    photo = render_photo([images[0], images[1]], np.random.default_rng(11))
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), photo)
    code, out, _ = run_cli(capsys, "--model", str(model), "--json", "--image", str(path))
    both = json_lines(out)[0]["digits"]
    assert [d["label"] for d in both] == [STAND_IN_READS] * 2
    x0, y0, w0, h0 = both[1]["box"]
    roi = f"{x0 - 5},{max(0, y0 - 5)},{w0 + 10},{h0 + 10}"
    code, out, _ = run_cli(capsys, "--model", str(model), "--json", "--roi", roi, "--image", str(path))
    only = json_lines(out)[0]["digits"]
    assert code == EXIT_OK and [d["label"] for d in only] == [STAND_IN_READS]
    assert abs(only[0]["box"][0] - x0) <= 2 and abs(only[0]["box"][1] - y0) <= 2


def test_save_writes_the_annotated_video(stand_in_model, mnist_test, tmp_path, capsys):
    model = Path(stand_in_model)
    images, _ = mnist_test
    rng = np.random.default_rng(8)
    video = write_video(tmp_path / "in.avi", [render_photo([images[2]], rng) for _ in range(8)])
    saved = tmp_path / "annotated.mp4"
    code, out, err = run_cli(capsys, "--model", str(model), "--video", str(video), "--save", str(saved))
    assert code == EXIT_OK, err
    cap = cv2.VideoCapture(str(saved))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 8 and frames[0].shape == (480, 640, 3)
    green = np.all(np.abs(frames[0].astype(int) - np.array([60, 200, 60])) <= 40, axis=2)
    assert green.sum() > 100, "no boxes drawn in the saved video"
    assert not list(tmp_path.glob(".*part*")), "temporary file left behind"
    assert run_cli(capsys, "--model", str(model), "--image", str(video), "--save", str(saved))[0] == EXIT_USAGE


def test_a_fixed_batch_model_reads_any_number_of_digits(stand_in_model, mnist_test, tmp_path, capsys):
    """A graph fixed to a batch of 4 runs in runs of 4, the last padded: 5 digits take 2 runs."""
    import onnx

    proto = onnx.load(stand_in_model)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    for p in proto.metadata_props:
        if p.key == "input":
            p.value = json.dumps({**json.loads(p.value), "shape": [4, 1, 28, 28]})
    fixed = tmp_path / "batch4.onnx"
    onnx.save(proto, str(fixed))
    from digitpipe.runtime.model import Model

    assert Model(fixed).info.fixed_batch == 4
    images, _ = mnist_test
    path = tmp_path / "five.png"
    cv2.imwrite(str(path), render_photo([images[i] for i in range(5)], np.random.default_rng(4), gap=(0.3, 0.4)))
    readings = {}
    for model in (stand_in_model, str(fixed)):
        for backend in ("onnxruntime", "opencv"):
            code, out, err = run_cli(capsys, "--model", model, "--backend", backend, "--json", "--image", str(path))
            assert code == EXIT_OK, err
            readings[model, backend] = json_lines(out)[0]["digits"]
    dynamic = readings[stand_in_model, "onnxruntime"]
    assert len(dynamic) == 5
    for digits in readings.values():
        assert [d["box"] for d in digits] == [d["box"] for d in dynamic]
        assert all(abs(a["confidence"] - b["confidence"]) < 1e-4 for a, b in zip(digits, dynamic))


def test_an_unreachable_display_reads_without_a_window(stand_in_model, samples, monkeypatch):
    """A DISPLAY that no X server answers (stale after ssh, still starting) made OpenCV's Qt
    abort the process; now: one warning, and the reading."""
    from digitpipe.runtime.display import display_problem

    for value, problem in (("", "no display"), ("nonsense", "is not a display name"), (":987", "cannot connect to display :987")):
        monkeypatch.setenv("DISPLAY", value)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        assert problem in display_problem()
    tile, label = samples["tiles"][0]
    env = {**os.environ, "DISPLAY": ":987", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "digitpipe.runtime", "--model", stand_in_model, "--image", str(tile)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == EXIT_OK and done.stdout.startswith(f"{tile}: {label}")
    assert done.stderr == "run-digit: warning: no window (cannot connect to display :987 (No such file or directory))\n"


def test_labels_stay_readable_on_light_and_dark_paper():
    """Every label sits on a filled box (text and box contrast strongly whatever the paper),
    inside the frame even for a digit at its top edge."""
    from digitpipe.runtime.display import BLACK, GREEN, annotate, label
    from digitpipe.runtime.reader import Digit, Reading

    for paper in (255, 0):
        for fill, ink, org in ((GREEN, BLACK, (300, -4)), (BLACK, (255, 255, 255), (8, 30))):
            frame = np.full((480, 640, 3), paper, np.uint8)
            x0, y0, x1, y1 = label(frame, "7 97%", org, 0.5, 1, fill=fill, ink=ink)
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
            box = frame[y0:y1, x0:x1]
            is_fill = np.all(box == fill, axis=2).mean()
            is_ink = (np.abs(box.astype(int) - np.array(ink)).sum(axis=2) < 100).mean()
            assert is_fill > 0.5 and is_ink > 0.05, (paper, fill, is_fill, is_ink)
        reading = Reading([Digit("7", 0.97, (300, 0, 40, 60))], {"locate": 1.0, "infer": 0.1})
        shown = annotate(np.full((480, 640, 3), paper, np.uint8), reading)
        assert np.all(shown[10:24, 10:60] == BLACK, axis=2).mean() > 0.5  # the headline's box, on any paper


def test_the_bench_asks_for_the_checkpoint_only_where_pytorch_is_the_baseline(tmp_path, capsys):
    from bench.__main__ import main as bench_main

    model, ckpt = tmp_path / "digits.onnx", tmp_path / "digits.pt"
    assert bench_main(["--model", str(model), "--checkpoint", str(ckpt), "--only", "video"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {model} is needed; run `make train export` first"
    assert bench_main(["--model", str(model), "--checkpoint", str(ckpt), "--only", "cold", "video"]) == 2
    assert f"{model} and {ckpt} are needed" in capsys.readouterr().err
