"""Real photographs and the other scene randomisation of the ink detector's training:
which wallpaper files are read, photo scenes with nothing marked, objects over the page
that hide ink (printed words: test_detector.py, beside the other print). Photographs are written to disk
here in the packages' layouts, so the verdicts do not depend on what the machine has
installed."""
from __future__ import annotations

import cv2
import numpy as np

from digitpipe.train import real_photos
from digitpipe.train.detector_scenes import HEIGHT, WIDTH, draw_scenes, objects_over_page
from digitpipe.train.scenes import compose_scene


def _write(path, w, h, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def test_one_file_per_wallpaper_the_smallest_landscape_copy_big_enough(tmp_path):
    kde, mate = tmp_path / "wallpapers", tmp_path / "mate"
    for size in ("640x480", "1280x1024", "2560x1600", "1080x1920"):
        _write(kde / "Lake" / "contents" / "images" / f"{size}.png", 32, 24)
    _write(kde / "Lake" / "contents" / "images_dark" / "1280x1024.png", 32, 24)
    _write(kde / "Lake" / "contents" / "screenshot.png", 32, 24)
    _write(kde / "Tall" / "contents" / "images" / "720x1440.jpg", 32, 24)
    _write(mate / "nature" / "Leaf.jpg", 32, 24)
    _write(mate / "abstract" / "Leaf_3840x2160.jpg", 32, 24)  # the same picture again
    (mate / "nature" / "notes.txt").write_text("not an image")
    files = real_photos.photo_files((kde, mate, tmp_path / "absent"))
    assert files == sorted([kde / "Lake/contents/images/1280x1024.png", kde / "Tall/contents/images/720x1440.jpg",
                            mate / "nature/Leaf.jpg"])


def test_photos_load_at_a_frames_size_and_unreadable_files_are_skipped(tmp_path):
    _write(tmp_path / "a" / "big.png", 1200, 800)
    _write(tmp_path / "a" / "small.png", 40, 30)  # too small to crop a view from
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    photos = real_photos.load_photos((tmp_path / "a",), side=300)
    assert [p.shape for p in photos] == [(200, 300, 3)]
    assert real_photos.load_photos((tmp_path / "none",)) == []


def test_a_view_is_any_part_of_a_photo_at_the_asked_size():
    photos = [np.random.default_rng(1).integers(0, 256, (427, 640, 3), dtype=np.uint8)]
    views = [real_photos.crop(photos, np.random.default_rng(s), (160, 120)) for s in range(8)]
    assert all(v.shape == (120, 160, 3) and v.dtype == np.uint8 for v in views)
    assert len({v.tobytes() for v in views}) == 8


def test_photo_scenes_mark_nothing_and_pages_on_photos_keep_their_ink(mnist_test):
    images, _ = mnist_test
    rng = np.random.default_rng(2)
    photos = [cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2) for _ in range(3)]
    others = np.zeros((5, 28, 28), np.uint8)
    x, y = draw_scenes(120, 5, images[:50], others, generic=True, workers=1, photos=photos)
    plain_x, _ = draw_scenes(120, 5, images[:50], others, generic=True, workers=1)
    assert x.shape == (120, HEIGHT, WIDTH, 3) and y.shape == (120, HEIGHT, WIDTH)
    empty = ~y.reshape(120, -1).any(axis=1)
    assert 3 <= empty.sum() <= 40  # a photograph alone (10%) or a page with no digit
    assert 0.005 < y.mean() < 0.1  # the others keep their digits
    assert not np.array_equal(x, plain_x)  # the photographs took part


def test_objects_over_the_page_hide_the_ink_they_cover(mnist_test):
    images, _ = mnist_test
    covered = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        photo, ink = compose_scene((), list(images[:3]), rng, with_ink=True)
        out, seen_ink = objects_over_page(photo, ink, rng)
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert (seen_ink <= ink + 1e-6).all()  # ink is hidden, never added
        changed = np.abs(out.astype(int) - photo.astype(int)).max(axis=2) > 30
        assert changed.sum() > 300, seed  # something lies on every page
        covered += (seen_ink < ink - 0.5).any()
    assert covered >= 1


def test_install_leaves_installed_photographs_alone(tmp_path, monkeypatch):
    """Where the folders load_photos reads exist, nothing is asked of apt (or of dpkg, which
    a machine that is not Debian lacks)."""
    (tmp_path / "wallpapers").mkdir()
    monkeypatch.setattr(real_photos, "FOLDERS", (str(tmp_path / "wallpapers"),))

    def refuse(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(real_photos.subprocess, "run", refuse)
    assert real_photos.install() == 0
