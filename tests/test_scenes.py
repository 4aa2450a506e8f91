"""The everyday scene families of the reader's benchmark, and its error gallery."""
import numpy as np
import pytest

from digitpipe.train.scenes import FAMILIES, render_scene


def test_every_family_renders_seeded_photos(mnist_test):
    images, _ = mnist_test
    for family in FAMILIES:
        a = render_scene(family, [images[0], images[1]], np.random.default_rng(3))
        b = render_scene(family, [images[0], images[1]], np.random.default_rng(3))
        assert a.shape == (480, 640, 3) and a.dtype == np.uint8 and np.array_equal(a, b), family
        assert a.std() > 5, family  # something is drawn
    with pytest.raises(ValueError, match="unknown scene family 'fog'"):
        render_scene("fog", [images[0]], np.random.default_rng(0))


def test_the_gallery_holds_each_failure_with_boxes_and_caption(stand_in_model, mnist_test, tmp_path):
    import cv2

    from bench.wild import write_failures
    from digitpipe.runtime.model import Model
    from digitpipe.runtime.reader import DigitReader

    images, labels = mnist_test
    rng = np.random.default_rng(1)
    items = [(render_scene("ruled", [images[i]], rng), str(labels[i])) for i in range(6)]
    reader = DigitReader(Model(stand_in_model), min_confidence=0.0)
    readings = [reader.read(photo) for photo, _ in items]
    wrong = [n for n, (r, (_, truth)) in enumerate(zip(readings, items))
             if "".join(d.label for d in r.digits if d.confidence >= 0.55) != truth]
    assert write_failures(tmp_path / "ruled", items, readings, 0.55) == len(wrong) > 0
    files = sorted((tmp_path / "ruled").iterdir())
    assert [int(f.name[:4]) for f in files] == wrong and all(f"truth-{items[n][1]}-read-" in f.name for f, n in zip(files, wrong))
    shown = cv2.imread(str(files[0]))
    assert shown.shape == (480, 640, 3) and np.all(shown[-22:-6, 8:60] < 40, axis=2).mean() > 0.5  # the caption's box (JPEG)
