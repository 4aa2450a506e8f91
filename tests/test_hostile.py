"""Hostile inputs through the real run-digit CLI: one clear line each, documented exit codes.
On the stand-in model (seconds): none of this depends on how well a model reads.

Exit codes: 0 all inputs read, 1 some inputs failed (the rest still read), 2 usage/model error.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

from digitpipe.runtime.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.conftest import STAND_IN_READS


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30000) -> bytes:
    """A real 1-bit PNG of side x side black pixels: ~100 KB on disk, side^2 bytes decoded."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def digit_ink(mnist_test, index=0):
    """An MNIST test digit and what the stand-in model reads on it: a hostile file that decodes
    right reads the same, one that decodes wrong (blank, inverted into a blob) does not."""
    images, _ = mnist_test
    return images[index], STAND_IN_READS


def make_cases(tmp: Path, mnist_test):
    """(name, paths, expected exit, expected text or error fragment) for each hostile input."""
    tile, label = digit_ink(mnist_test)
    big = cv2.resize(255 - tile, (280, 280), interpolation=cv2.INTER_CUBIC)  # dark ink on white
    cases = []

    def add(name, filename, content, code, expect):
        path = tmp / filename
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif callable(content):
            content(path)
        cases.append((name, [str(path)], code, expect))

    add("missing path", "nope.png", None, EXIT_INPUT_FAILED, "no such file")
    (tmp / "empty-dir").mkdir()
    cases.append(("folder without images", [str(tmp / "empty-dir")], EXIT_INPUT_FAILED, "folder has no image files"))
    add("empty file", "empty.png", b"", EXIT_INPUT_FAILED, "empty file")
    ok, png = cv2.imencode(".png", big)
    add("truncated PNG", "truncated.png", png.tobytes()[: len(png) // 2], EXIT_INPUT_FAILED, "not a readable image")
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    add("truncated JPEG", "truncated.jpg", jpg.tobytes()[: len(jpg) // 2], EXIT_INPUT_FAILED, "not a readable image")
    add("text named .png", "notes.png", b"shopping list: milk\n", EXIT_INPUT_FAILED, "not a readable image")
    add("ONNX named .png", "model.png", None, EXIT_INPUT_FAILED, "not a readable image")
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    add("0x0 PNG", "zero.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b""),
        EXIT_INPUT_FAILED, "image has no pixels")
    add("1x1 image", "one.png", lambda p: cv2.imwrite(str(p), np.zeros((1, 1), np.uint8)), EXIT_OK, "")
    add("1xN image", "row.png", lambda p: cv2.imwrite(str(p), np.full((1, 500), 255, np.uint8)), EXIT_OK, "")
    add("Nx1 image", "column.png", lambda p: cv2.imwrite(str(p), np.full((500, 1), 30, np.uint8)), EXIT_OK, "")
    add("16-bit PNG", "deep.png", lambda p: cv2.imwrite(str(p), big.astype(np.uint16) * 257), EXIT_OK, label)
    add("float TIFF", "float.tiff", lambda p: cv2.imwrite(str(p), big.astype(np.float32) / 255), EXIT_OK, label)
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., 3] = 255 - big  # black ink, transparent paper
    add("RGBA PNG", "rgba.png", lambda p: cv2.imwrite(str(p), rgba), EXIT_OK, label)
    add("gray+alpha PNG", "la.png", lambda p: Image.fromarray(np.dstack([np.zeros_like(big), 255 - big]), "LA").save(p), EXIT_OK, label)
    add("palette PNG", "palette.png", lambda p: Image.fromarray(big).convert("P").save(p), EXIT_OK, label)
    add("CMYK JPEG", "cmyk.jpg", lambda p: Image.fromarray(big).convert("CMYK").save(p, quality=95), EXIT_OK, label)
    add("animated GIF", "anim.gif", lambda p: Image.fromarray(big).save(
        p, save_all=True, append_images=[Image.fromarray(np.full_like(big, 255))]), EXIT_OK, label)
    add("decompression bomb", "bomb.png", png_bomb(), EXIT_INPUT_FAILED, "over the limit")
    add("spaces and non-ASCII in the path", "ziffer ä 数字.png", lambda p: Image.fromarray(big).save(p),
        EXIT_OK, label)
    # Root reads past file permissions; a Unix socket cannot be opened for reading by anyone.
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "socket.png"))
    cases.append(("unreadable file", [str(tmp / "socket.png")], EXIT_INPUT_FAILED, "cannot read it"))
    loop_a, loop_b = tmp / "loop-a.png", tmp / "loop-b.png"
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    cases.append(("symlink loop", [str(loop_a)], EXIT_INPUT_FAILED, "no such file"))
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory, mnist_test, stand_in_model):
    tmp = tmp_path_factory.mktemp("hostile")
    model = Path(stand_in_model)
    made = make_cases(tmp, mnist_test)
    (tmp / "model.png").write_bytes(model.read_bytes())
    return {name: rest for name, *rest in made}


CASE_NAMES = [
    "missing path", "folder without images", "empty file", "truncated PNG", "truncated JPEG", "text named .png",
    "ONNX named .png", "0x0 PNG", "1x1 image", "1xN image", "Nx1 image", "16-bit PNG", "float TIFF", "RGBA PNG",
    "gray+alpha PNG", "palette PNG", "CMYK JPEG", "animated GIF", "decompression bomb",
    "spaces and non-ASCII in the path", "unreadable file", "symlink loop",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_image(name, cases, stand_in_model, capsys):
    model = Path(stand_in_model)
    paths, code, expect = cases[name]
    got = main(["--no-window", "--json", "--model", str(model), "--image", *paths])
    out, err = capsys.readouterr()
    assert got == code, (name, out, err)
    result = json.loads(out.splitlines()[0])
    if code == EXIT_OK:
        assert result["text"] == expect and err == ""
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0] and paths[0] in lines[0], (name, err)
        assert expect in result["error"]


def test_every_case_in_one_batch_reads_the_good_ones(cases, stand_in_model, capsys):
    model = Path(stand_in_model)
    paths = [p for name in CASE_NAMES for p in cases[name][0]]
    got = main(["--no-window", "--json", "--model", str(model), "--image", *paths])
    out, err = capsys.readouterr()
    results = json.loads("[" + ",".join(out.splitlines()) + "]")
    assert got == EXIT_INPUT_FAILED
    failures = [n for n in CASE_NAMES if cases[n][1] != EXIT_OK]
    assert len(err.strip().splitlines()) == len(failures)
    read = {r["source"]: r["text"] for r in results if "text" in r}
    for name in CASE_NAMES:
        paths, code, expect = cases[name]
        if code == EXIT_OK:
            assert read[paths[0]] == expect, name


def test_bomb_is_refused_before_decoding(cases, stand_in_model):
    """Through the real console entry: refused quickly and without gigabytes of memory."""
    model = Path(stand_in_model)
    paths, _, _ = cases["decompression bomb"]
    # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's over exec).
    code = ("import re, sys, runtime.cli as c; rc = c.main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print(int(hwm) // 1024, file=sys.stderr); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "--no-window", "--model", str(model), "--image", *paths],
                          capture_output=True, text=True)
    *message, peak_mb = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_INPUT_FAILED and "900 megapixels" in message[0]
    assert int(peak_mb) < 500, f"peak memory {peak_mb} MB"


def test_model_whose_graph_disagrees_with_its_metadata(stand_in_model, tmp_path, capsys):
    model = Path(stand_in_model)
    proto = onnx.load(str(model))
    for dim, value in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], (32, 32)):
        dim.dim_value = value
    wrong = tmp_path / "wrong-shape.onnx"
    onnx.save(proto, str(wrong))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    for backend in ("onnxruntime", "opencv"):
        assert main(["--no-window", "--model", str(wrong), "--backend", backend, "--image", str(img)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "has shape [" in err and "the metadata says" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("missing", ["labels", "input", "preprocess"])
def test_model_missing_metadata_keys(stand_in_model, tmp_path, capsys, missing):
    model = Path(stand_in_model)
    proto = onnx.load(str(model))
    keep = [p for p in proto.metadata_props if p.key != missing]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    path = tmp_path / f"no-{missing}.onnx"
    onnx.save(proto, str(path))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    assert main(["--no-window", "--model", str(path), "--image", str(img)]) == EXIT_USAGE
    assert f"metadata lacks '{missing}'" in capsys.readouterr().err


def test_empty_model_file_and_bad_flags(tmp_path, capsys):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert main(["--model", str(empty), "--image", "x.png"]) == EXIT_USAGE
    assert "empty file" in capsys.readouterr().err
    assert main(["--min-confidence", "2", "--image", "x.png"]) == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(empty)])  # no input given
    assert exit_info.value.code == EXIT_USAGE


def test_video_without_frames(stand_in_model, tmp_path, capsys):
    model = Path(stand_in_model)
    path = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    writer.release()
    code = main(["--no-window", "--model", str(model), "--video", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_FAILED and len(err.strip().splitlines()) == 1
    assert "no frame could be read" in err or "not a readable video" in err


def test_runtime_opens_no_network_connection(stand_in_model, tmp_path):
    """run-digit with every socket creation made to fail: it still reads."""
    model = Path(stand_in_model)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    code = ("import socket, sys\n"
            "class NoNet(socket.socket):\n"
            "    def __init__(self, *a, **k): raise AssertionError('network access attempted')\n"
            "socket.socket = NoNet\n"
            "import runtime.cli as c; sys.exit(c.main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, "--no-window", "--model", str(model), "--image", str(img)],
                          capture_output=True, text=True)
    assert done.returncode == EXIT_OK and "network access" not in done.stderr
