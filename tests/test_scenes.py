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


def test_ink_under_the_desks_pen_and_mug_is_not_marked(mnist_test, monkeypatch):
    """The detector learns from the returned ink: ink a pen lies across is not seen, so it is
    not marked (a marked pen teaches the detector that a dark bar over a digit is ink)."""
    import cv2

    from digitpipe.train import scenes

    images, _ = mnist_test
    page_on_desk, returned = scenes.page_on_desk, []

    def recorded(photo, rng):  # page_on_desk as it is, its result kept for the check
        returned.append(page_on_desk(photo, rng))
        return returned[-1]

    monkeypatch.setattr(scenes, "page_on_desk", recorded)
    crossed = 0
    for seed in range(40):
        _, ink = render_scene("desk", [images[k] for k in range(3)], np.random.default_rng(seed), with_ink=True)
        covered = returned[-1][2]
        assert covered.shape == ink.shape and covered.max() == 1.0
        # the page's ink is at most 1, so what the pen and the mug leave of it is at most 1 - covered:
        # none where they cover it whole, less at their anti-aliased rims
        assert (ink <= 1 - covered + 1e-6).all() and ink[covered == 1].max(initial=0) == 0
        page_ink = cv2.dilate((ink > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        crossed += bool((page_ink & (covered > 0.99)).any())
    assert crossed >= 3  # the pen or the mug lay across the writing in some of them


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


def test_the_interval_of_a_rate_is_wilsons():
    from bench.wild import wilson

    # Wilson score intervals at z = 1.96 (Newcombe 1998, table I: 81/263 -> 0.2553-0.3662).
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    lo, hi = wilson(90, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.826, 0.945)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)
    narrower = wilson(900, 1000)
    assert lo < narrower[0] < 0.9 < narrower[1] < hi  # ten times the photos: a narrower interval


def test_each_kind_reports_the_interval_of_its_default_rate(stand_in_model, mnist_test):
    from bench.wild import evaluate, wilson

    images, labels = mnist_test
    rng = np.random.default_rng(2)
    sets = {"scene:ruled": [(render_scene("ruled", [images[i]], rng), str(labels[i])) for i in range(5)]}
    row = evaluate(stand_in_model, 5, thresholds=(0.55,), sets=sets)["scene:ruled"]
    assert row["count"] == 5
    assert row["interval"] == wilson(round(5 * row["exact@0.55"]), 5)
    assert row["interval"][0] <= row["exact@0.55"] <= row["interval"][1]


def test_an_only_that_names_no_kind_is_a_usage_error(capsys, mnist_test):
    from bench.wild import KINDS, beyond_sets, main, scene_sets

    # KINDS, which --only is checked against, are the kinds the set draws.
    drawn = [*scene_sets(1, tiles=mnist_test), *beyond_sets(1, tiles=mnist_test)]
    assert [k for k in KINDS if ":" in k] == drawn and "not-digits" in KINDS
    with pytest.raises(SystemExit) as stop:
        main(["--only", "letters"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m bench.wild: error: --only 'letters' names no kind") and "not-digits" in err[-1]


def test_families_that_name_no_family_are_a_usage_error(capsys):
    """bench.lofo says so before any set is drawn or detector trained."""
    from bench.lofo import main as lofo_main

    for families in ("desk,paper", ","):
        with pytest.raises(SystemExit) as stop:
            lofo_main(["--families", families])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"python -m bench.lofo: error: --families {families!r}") and "ruled" in err, err


def test_the_beyond_kinds_lie_past_the_families_range(mnist_test):
    """bench.wild's "beyond:<name>" kinds: the same draw, past what any scene family draws."""
    from bench.wild import BEYOND, beyond_sets
    from digitpipe.train.scenes import compose_scene, dim, shadow

    flat = np.full((480, 640, 3), 200.0)
    for seed in range(10):
        # A shadow's darkest paper: the families keep at least 35% of the light, beyond keeps less.
        assert shadow(flat, np.random.default_rng(seed)).min() >= 200 * 0.35 - 1e-6
        assert BEYOND["shadow"][1]["light"]["shadow"](flat, np.random.default_rng(seed)).min() < 200 * 0.35
        # A dimmer room: the same draw's noise at least twice the family's (its light at most half).
        ordinary = dim(flat, np.random.default_rng(seed)).std()
        assert BEYOND["dim"][1]["light"]["dim"](flat, np.random.default_rng(seed)).std() > 1.9 * ordinary
    images, _ = mnist_test
    for seed in range(3):
        photo, ink = compose_scene((), [images[0]], np.random.default_rng(seed), with_ink=True)
        faint, faint_ink = compose_scene((), [images[0]], np.random.default_rng(seed), with_ink=True, **BEYOND["faint"][1])
        assert np.median(photo[ink > 0.9]) < 85 < 100 < np.median(faint[faint_ink > 0.9])
    sets = beyond_sets(2, seed=5, tiles=mnist_test)
    assert sorted(sets) == [f"beyond:{name}" for name in sorted(BEYOND)]
    assert all(len(items) == 2 and photo.shape == (480, 640, 3) and 1 <= len(text) <= 4 and text.isdigit()
               for items in sets.values() for photo, text in items)
