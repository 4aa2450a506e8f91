"""run-digit on a freshly trained and exported model: real files, real backends."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.photos import render_photo
from runtime.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.conftest import ROOT, write_png

pytestmark = pytest.mark.slow
BACKENDS = ["onnxruntime", "opencv"]


def run_cli(capsys, *args):
    code = main(["--no-window", *args])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


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


def test_readable_line_per_image_and_blank_page(exported, samples, tmp_path, capsys):
    model, _ = exported
    blank = write_png(tmp_path / "blank.png", np.full((480, 640), 220, np.uint8))
    photo, label = samples["photos"][0]
    code, out, _ = run_cli(capsys, "--model", str(model), "--image", str(photo), str(blank))
    lines = out.splitlines()
    assert code == EXIT_OK and len(lines) == 2
    assert lines[0].startswith(f"{photo}: ") and lines[1] == f"{blank}: no digit"


def test_batch_with_bad_files_reads_the_rest(exported, samples, tmp_path, capsys):
    model, _ = exported
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


def write_video(path: Path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


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


def test_bad_video_and_camera(exported, tmp_path, capsys):
    model, _ = exported
    (tmp_path / "notes.mp4").write_text("not a video")
    for args, message in ((["--video", str(tmp_path / "notes.mp4")], "not a readable video"),
                          (["--video", str(tmp_path / "missing.mp4")], "no such video file"),
                          (["--camera", "99"], "camera 99: cannot be opened")):
        code, out, err = run_cli(capsys, "--model", str(model), *args)
        assert code == EXIT_INPUT_FAILED and message in err and len(err.strip().splitlines()) == 1


def test_truncated_video_reads_what_is_there(exported, mnist_test, tmp_path, capsys):
    model, _ = exported
    images, _ = mnist_test
    rng = np.random.default_rng(9)
    video = write_video(tmp_path / "clip.avi", [render_photo([images[0]], rng) for _ in range(20)])
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(capsys, "--model", str(model), "--json", "--video", str(video))
    frames = [r for r in json_lines(out) if "frame" in r]
    assert 1 <= len(frames) < 20 and "Traceback" not in err
    assert code == EXIT_INPUT_FAILED and "ended after" in err


def test_bad_models_exit_2_with_one_line(exported, tmp_path, capsys):
    import onnx

    model, _ = exported
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
    truncated.write_bytes(model.read_bytes()[:5000])
    img = write_png(tmp_path / "x.png", np.zeros((28, 28), np.uint8))
    for path, message in ((tmp_path / "none.onnx", "no such model file"), (text, "not an ONNX model"),
                          (plain, "no digitpipe metadata"), (broken, "'preprocess' is not valid JSON"),
                          (truncated, "not an ONNX model"), (tmp_path, "is a folder")):
        for backend in BACKENDS:
            code, out, err = run_cli(capsys, "--model", str(path), "--backend", backend, "--image", str(img))
            assert code == EXIT_USAGE and message in err and len(err.strip().splitlines()) == 1, (path, err)


def test_speak_without_a_sound_device_warns_once_and_reads(exported, samples, capsys):
    from runtime.speech import playback_problem

    model, _ = exported
    photo, label = samples["tiles"][0]
    code, out, err = run_cli(capsys, "--model", str(model), "--speak", "--image", str(photo))
    assert code == EXIT_OK and out.startswith(f"{photo}: {label}")
    if playback_problem():
        assert err.count("warning: speech is off") == 1


def test_console_script_without_torch(exported, samples, tmp_path):
    """The installed run-digit, in a process where importing torch fails."""
    model, _ = exported
    photo, label = samples["photos"][0]
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    code = ("import sys, runtime.cli as c; rc = c.main(sys.argv[1:]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'train', 'export')]; "
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


def test_roi_reads_only_inside_and_keeps_image_coordinates(exported, mnist_test, tmp_path, capsys):
    model, _ = exported
    images, labels = mnist_test
    photo = render_photo([images[0], images[1]], np.random.default_rng(11))
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), photo)
    code, out, _ = run_cli(capsys, "--model", str(model), "--json", "--image", str(path))
    both = json_lines(out)[0]["digits"]
    assert [d["label"] for d in both] == [str(labels[0]), str(labels[1])]
    x0, y0, w0, h0 = both[1]["box"]
    roi = f"{x0 - 5},{max(0, y0 - 5)},{w0 + 10},{h0 + 10}"
    code, out, _ = run_cli(capsys, "--model", str(model), "--json", "--roi", roi, "--image", str(path))
    only = json_lines(out)[0]["digits"]
    assert code == EXIT_OK and [d["label"] for d in only] == [str(labels[1])]
    assert abs(only[0]["box"][0] - x0) <= 2 and abs(only[0]["box"][1] - y0) <= 2


def test_save_writes_the_annotated_video(exported, mnist_test, tmp_path, capsys):
    model, _ = exported
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
