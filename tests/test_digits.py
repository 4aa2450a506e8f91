from pathlib import Path

import cv2
import numpy as np
import pytest

from digitpipe.train.photos import render_photo
from digitpipe.runtime.digits import Candidate, FinderSettings, choose_readings, find_digits, ink_is_dark, normalise_tile


def test_normalise_tile_fits_20_and_centres_mass():
    ink = np.zeros((300, 100), np.uint8)
    ink[20:280, 30:70] = 255  # a tall bar, far from centre
    tile = normalise_tile(ink)
    ys, xs = np.nonzero(tile > 0)
    assert tile.shape == (28, 28)
    assert 19 <= ys.max() - ys.min() + 1 <= 21  # the long side fills 20 px
    m = cv2.moments(tile)
    assert abs(m["m10"] / m["m00"] - 14) < 0.75 and abs(m["m01"] / m["m00"] - 14) < 0.75


def test_mnist_tiles_survive_renormalisation(mnist_test):
    """An MNIST tile put through the photo normalisation comes back nearly the same."""
    images, _ = mnist_test
    for img in images[:50]:
        again = normalise_tile(img)
        assert np.abs(again.astype(int) - img.astype(int)).mean() < 25


def test_polarity_from_the_histogram(mnist_test):
    images, _ = mnist_test
    assert not ink_is_dark(images[0])  # MNIST: light ink on black
    assert ink_is_dark(255 - images[0])
    photo = render_photo([images[0]], np.random.default_rng(1))
    assert ink_is_dark(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize("seed", range(6))
def test_finds_each_digit_of_a_number_left_to_right(mnist_test, seed):
    images, labels = mnist_test
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 6))
    picks = rng.choice(len(images), count, replace=False)
    photo = render_photo([images[i] for i in picks], rng)
    found = [c for c in find_digits(photo) if not c.piece]
    assert len(found) == count
    xs = [c.box[0] for c in found]
    assert xs == sorted(xs)
    for c in found:
        assert c.tile.shape == (28, 28) and c.tile.max() > 200


@pytest.mark.parametrize("make", [
    lambda rng: np.full((480, 640), 215, np.uint8),  # blank page
    lambda rng: np.clip(rng.normal(200, 6, (480, 640)), 0, 255).astype(np.uint8),  # noisy blank page
    lambda rng: cv2.GaussianBlur((np.mgrid[0:480, 0:640][1] / 640 * 200 + 30).astype(np.uint8), (0, 0), 5),  # shadow ramp
])
def test_nothing_on_blank_pages(make):
    assert find_digits(make(np.random.default_rng(0))) == []


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from digitpipe.runtime.errors import InputError  # noqa: E402
from digitpipe.runtime.imageio import to_uint8  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16, np.float32]),
              st.tuples(st.integers(1, 90), st.integers(1, 90)) | st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 2, 3, 4]))))
def test_any_image_is_located_or_refused_cleanly(image):
    """Whatever the shape, depth and channels: InputError, or tiles of the input size."""
    try:
        gray = to_uint8(image)
    except InputError:
        return
    for c in find_digits(gray):
        x, y, w, h = c.box
        assert c.tile.shape == (28, 28) and c.tile.dtype == np.uint8
        assert 0 <= x and 0 <= y and x + w <= gray.shape[1] + 1 and y + h <= gray.shape[0] + 1


def test_touching_digits_are_offered_whole_and_cut_at_several_places(mnist_test):
    images, _ = mnist_test
    photo = render_photo([images[3], images[4]], np.random.default_rng(5), gap=(-0.1, -0.1))  # a 0 touching a 4
    found = find_digits(photo)
    whole = [c for c in found if c.offered_twice and not c.piece]
    pieces = [c for c in found if c.piece]
    assert len(whole) == 1 and len(pieces) >= 2
    (wx, _, ww, _), extent = whole[0].box, whole[0].extent
    assert whole[0].span == (0, extent) and all(c.extent == extent and 0 <= c.span[0] < c.span[1] <= extent for c in pieces)
    for c in pieces:  # each piece lies within the whole, where its columns say
        assert wx <= c.box[0] and c.box[0] + c.box[2] <= wx + ww
    ends = {c.span[1] for c in pieces if c.span[0] == 0}
    assert any(c.span[0] in ends and c.span[1] == extent for c in pieces), "no two pieces make up the whole"


def spans(*items):
    """Candidates of one group of 30 columns: (c0, c1) each; (0, 30) is the whole."""
    tile = np.zeros((28, 28), np.uint8)
    return [Candidate((c0, 0, c1 - c0, 10), tile, 1, group=0, piece=(c0, c1) != (0, 30), span=(c0, c1), extent=30)
            for c0, c1 in items]


def test_choose_readings_keeps_the_most_likely_cut():
    tile = np.zeros((28, 28), np.uint8)
    alone = Candidate((50, 0, 5, 5), tile, 1)
    found = [alone, *spans((0, 30), (0, 15), (15, 30))]
    assert choose_readings(found, np.array([0.9, 0.5, 0.95, 0.9])) == [0, 2, 3]  # both pieces surer
    assert choose_readings(found, np.array([0.9, 0.97, 0.95, 0.8])) == [0, 1]  # one doubtful piece: the whole
    # the best of three cuts: 0.9 x 0.95 beats the whole (0.3) and a cut with a doubtful piece
    found = [alone, *spans((0, 30), (0, 10), (10, 30), (0, 20), (20, 30))]
    assert choose_readings(found, np.array([0.9, 0.3, 0.9, 0.95, 0.99, 0.5])) == [0, 2, 3]
    # three digits beat two when each is sure enough
    found = spans((0, 30), (0, 10), (10, 20), (20, 30), (10, 30))
    assert choose_readings(found, np.array([0.0, 0.95, 0.95, 0.95, 0.6])) == [1, 2, 3]
    # the whole turned away (too wide) and no confident cut: nothing, not the doubtful pieces
    assert choose_readings(spans((0, 15), (15, 30)), np.array([0.5, 0.4])) == []
    assert choose_readings(spans((0, 15), (15, 30)), np.array([0.9, 0.95])) == [0, 1]


def test_a_cut_off_tail_is_no_piece():
    """A 2 with a long tail, wide enough to be tried as two digits: no piece is the tail alone."""
    page = np.full((300, 400), 230, np.uint8)
    cv2.ellipse(page, (150, 110), (45, 45), 0, 180, 400, 30, 8)  # the 2's bow
    cv2.line(page, (183, 142), (110, 220), 30, 8)
    cv2.line(page, (110, 220), (300, 220), 30, 8)  # a tail twice the bow's width
    cv2.line(page, (300, 220), (300, 170), 30, 8)  # ending in a short upstroke
    found = find_digits(page)
    whole = [c for c in found if not c.piece]
    assert len(whole) == 1 and whole[0].offered_twice and any(c.piece for c in found)  # cuts were tried
    height = whole[0].box[3]
    assert all(c.box[3] >= FinderSettings().piece_height * height - 2 for c in found)


def test_pen_strokes_spread_little_blobs_and_textures_much(mnist_test):
    from digitpipe.runtime.digits import stroke_shape

    images, _ = mnist_test
    spreads = [stroke_shape(cv2.resize(t, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC) > 100)[0] for t in images[:300]]
    assert max(spreads) < FinderSettings().max_stroke_spread
    stick_figure = np.zeros((300, 200), np.uint8)  # a filled head on thin limbs: no pen draws both
    cv2.circle(stick_figure, (100, 60), 45, 1, -1)
    for a, b in (((100, 100), (100, 220)), ((40, 150), (160, 150)), ((100, 220), (50, 290)), ((100, 220), (150, 290))):
        cv2.line(stick_figure, a, b, 1, 5)
    assert stroke_shape(stick_figure)[0] > FinderSettings().max_stroke_spread


@pytest.mark.parametrize("name", ["camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "grass.png", "rocket.jpg"])
def test_no_digit_in_photographs_of_people_and_things(name):
    """Real photographs (scikit-image's samples) hold no pen strokes: nothing is offered to the model."""
    import skimage

    photo = cv2.imread(str(Path(skimage.__file__).parent / "data" / name), cv2.IMREAD_COLOR)
    assert find_digits(photo) == []


def test_rows_of_ink_are_not_one_digit(mnist_test):
    """A digit written below another is its own glyph, not a piece of the one above."""
    images, _ = mnist_test
    page = np.full((480, 640), 220, np.uint8)
    for tile, top in ((images[0], 40), (images[1], 260)):  # 168 px tall digits, 52 px apart
        ink = cv2.resize(tile, (168, 168), interpolation=cv2.INTER_CUBIC)
        page[top : top + 168, 250:418] = np.minimum(page[top : top + 168, 250:418], 255 - ink)
    found = [c for c in find_digits(page) if not c.offered_twice]
    assert sorted(c.box[1] // 100 for c in found) == [0, 2]  # one at the top, one lower down


def test_thin_printed_lines_beside_handwriting_are_no_digits(mnist_test):
    """A form's box sides are hairlines beside pen strokes: read as "1"s unless a group far
    thinner than the page's other ink is dropped (FinderSettings.thin_share)."""
    images, _ = mnist_test
    rng = np.random.default_rng(3)
    page = cv2.cvtColor(render_photo([images[i] for i in (0, 1, 2)], rng, digit_height=140, gap=(0.6, 0.6)),
                        cv2.COLOR_BGR2GRAY)
    found = [c for c in find_digits(page) if not c.piece]
    sides = [c.box[0] - 12 for c in found] + [found[-1].box[0] + found[-1].box[2] + 12]
    for x in sides:  # a box side before each digit and after the last, 2 px wide
        cv2.line(page, (x, 150), (x, 330), 40, 2)
    kept = {c.box[0] for c in find_digits(page) if not c.piece}
    with_lines = {c.box[0] for c in find_digits(page, FinderSettings(thin_share=0)) if not c.piece}
    assert len(found) == len(kept) == 3 and len(with_lines) == 3 + len(sides), (kept, with_lines)


def test_digits_of_one_number_are_never_too_thin(mnist_test):
    """Digits of different MNIST writers in one number: none is dropped as thin."""
    images, _ = mnist_test
    rng = np.random.default_rng(11)
    for _ in range(40):
        idx = rng.choice(len(images), int(rng.integers(3, 6)), replace=False)
        page = cv2.cvtColor(render_photo([images[i] for i in idx], rng), cv2.COLOR_BGR2GRAY)
        boxes = [c.box for c in find_digits(page)]
        assert boxes == [c.box for c in find_digits(page, FinderSettings(thin_share=0))]
