import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from digitpipe.runtime.errors import InputError
from digitpipe.runtime.imageio import read_image, to_uint8
from digitpipe.runtime.sources import expand_paths


def test_reads_gray_colour_alpha_and_16_bit(tmp_path):
    gray = np.full((20, 30), 200, np.uint8)
    gray[5:15, 10:12] = 10
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "c.jpg"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(tmp_path / "d.png"), gray.astype(np.uint16) * 257)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 10:12] = (0, 0, 0, 255)  # black ink on a transparent background
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "c.jpg").shape == (20, 30, 3)
    assert np.array_equal(read_image(tmp_path / "d.png"), gray)
    a = read_image(tmp_path / "a.png")
    assert a.shape == (20, 30, 3) and a[0, 0].tolist() == [255, 255, 255] and a[10, 10].tolist() == [0, 0, 0]


def test_float_tiff_and_non_ascii_path_with_spaces(tmp_path):
    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "ziffer fünf.tiff"
    assert cv2.imwrite(str(path), img)
    out = read_image(path)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[-1, -1] == 255


@pytest.mark.parametrize("name, content, message", [
    ("text.png", b"this is not an image\n", "not a readable image"),
    ("empty.png", b"", "empty file"),
    ("truncated.png", None, "not a readable image"),
])
def test_bad_files_raise_one_line_input_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
        content = png.tobytes()[:100]
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_image(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_folder_and_unreadable(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)
    locked = tmp_path / "locked.png"
    cv2.imwrite(str(locked), np.zeros((4, 4), np.uint8))
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: nothing to test
        pytest.skip("running as root: permissions do not stop reads")
    with pytest.raises(InputError, match="permission denied"):
        read_image(locked)


def test_folder_expansion_reports_empty_folders(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "none").mkdir()
    for n in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / "imgs" / n).write_bytes(b"x")
    entries = expand_paths([str(tmp_path / "imgs"), str(tmp_path / "none")])
    assert [os.path.basename(n) for n, _ in entries] == ["a.jpg", "b.png", "none"]
    assert isinstance(entries[-1][1], InputError) and "no image files" in str(entries[-1][1])


@settings(max_examples=200, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]),
              st.tuples(st.integers(0, 6), st.integers(0, 6)) | st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 5))))
def test_any_array_converts_or_fails_cleanly(image):
    try:
        out = to_uint8(image)
    except InputError:
        return
    assert out.dtype == np.uint8 and out.ndim in (2, 3) and (out.ndim == 2 or out.shape[2] == 3)
    assert out.shape[:2] == image.shape[:2]
