"""Training scenes for the ink detector: a photo at the detector's input size and the mask of
its digit ink, under any mix of the scene conditions of train/scenes.py and generic light,
colour and background randomisation. numpy and OpenCV only, so worker processes can draw
them without importing torch (draw_scenes)."""
from __future__ import annotations

import multiprocessing
import os

import cv2
import numpy as np

from digitpipe.train import real_photos
from digitpipe.train.photos import HERSHEY
from digitpipe.train.scenes import FAMILIES, FURNITURE, compose_scene

WIDTH, HEIGHT = 160, 120  # the detector's input: a 640x480 frame at a quarter of its side
INK_COVERAGE = 0.2  # a pixel of the small frame is digit ink when this share of it is ink
# Scenes are drawn in this many chunks, each from its own seed, so the data are the same
# whatever the number of processes that draw them.
CHUNKS = 16


def random_conditions(rng: np.random.Generator, exclude=()) -> set[str]:
    """Any mix of the families' conditions: at most one kind of page furniture, each light
    condition, colour and the desk independently."""
    chosen = set()
    furniture = [f for f in FURNITURE if f not in exclude]
    if furniture and rng.random() < 0.6:
        chosen.add(furniture[int(rng.integers(len(furniture)))])
    for name in FAMILIES:
        if name not in FURNITURE and name not in exclude and rng.random() < 0.3:
            chosen.add(name)
    return chosen


def camera(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What differs between cameras: defocus, exposure and contrast."""
    if rng.random() < 0.4:
        photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.4:
        gain, offset = rng.uniform(0.6, 1.3), rng.uniform(-30, 30)
        photo = np.clip(photo.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return photo


def printed_digit(rng: np.random.Generator) -> np.ndarray:
    """A printed digit in one of OpenCV's Hershey fonts, any weight, upright or slanted (light on dark)."""
    canvas = np.zeros((112, 112), np.uint8)
    cv2.putText(canvas, str(int(rng.integers(10))), (22, 90), HERSHEY[int(rng.integers(len(HERSHEY)))], 2.6, 255,
                int(rng.integers(2, 10)), cv2.LINE_AA)
    shear = np.float32([[1, rng.uniform(-0.25, 0.25), 0], [0, 1, 0]])
    return cv2.warpAffine(canvas, shear, (112, 112))


def uneven_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light no family names: a smooth random field times, half the time, a random polygon
    lit brighter or darker with an edge anywhere from hard to soft."""
    h, w = photo.shape[:2]
    field = cv2.resize(rng.uniform(0.55, 1.3, (3, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        patch = np.zeros((h, w), np.float32)
        points = (rng.uniform(-0.2, 1.2, (int(rng.integers(3, 7)), 2)) * [w, h]).astype(np.int32)
        cv2.fillPoly(patch, [cv2.convexHull(points)], 1.0)
        sigma = rng.uniform(0.3, 6.0)
        patch = cv2.GaussianBlur(patch, (0, 0), sigma)
        field = field * (1 + patch * (rng.uniform(0.35, 1.6) - 1))
    return np.clip(photo.astype(np.float32) * field[..., None], 0, 255).astype(np.uint8)


VEIL_MAX = 160  # the most light veiling_light adds, in grey levels


def veiling_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light added, not multiplied: a reflection off glossy paper, haze or a lamp's veil adds
    the same light to ink and paper alike, so it lowers the ink's contrast where it falls
    (uneven_light's field scales ink and paper together and keeps it). Its extent is a random
    smooth field, anywhere from a patch to the whole frame; at most VEIL_MAX grey levels, so
    that the ink it washes stays visible against paper it turns white (ink of 25-70 at most
    185-230): what cannot be seen is no ink to mark."""
    h, w = photo.shape[:2]
    coarse = rng.uniform(-1.0, 1.5, (int(rng.integers(2, 5)), int(rng.integers(2, 6)))).astype(np.float32)
    field = np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1) ** rng.uniform(0.5, 2.0)
    return np.clip(photo.astype(np.float32) + field[..., None] * rng.uniform(40, VEIL_MAX), 0, 255).astype(np.uint8)


def printed_structure(page: np.ndarray, boxes, rng: np.random.Generator) -> None:
    """Print no family names: sets of parallel lines at any angle and spacing, tables, and
    boxes anywhere (some around the digits), in any colour and weight."""
    h, w = page.shape[:2]
    colour = tuple(float(c) for c in rng.uniform(0, 200, 3))
    thickness = int(rng.integers(1, 4))
    kind = int(rng.integers(3))
    if kind < 2:  # parallel lines, or (kind 1) a table: two sets at right angles
        angle, step = rng.uniform(-0.3, 0.3) + rng.choice([0, np.pi / 2]), rng.uniform(12, 140)
        for a in [angle, angle + np.pi / 2][: kind + 1]:
            d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            for offset in np.arange(-w - h, w + h, step) + rng.uniform(0, step):
                centre = np.array([w / 2, h / 2]) + n * offset
                p0, p1 = centre - d * (w + h), centre + d * (w + h)
                cv2.line(page, tuple(int(v) for v in p0), tuple(int(v) for v in p1), colour, thickness, cv2.LINE_AA)
    else:
        rects = [(x - m, y - m, bw + 2 * m, bh + 2 * m) for (x, y, bw, bh) in boxes if rng.random() < 0.5
                 for m in [rng.uniform(-0.1, 0.4) * bh]]
        rects += [tuple(rng.uniform(0, 1, 4) * [w, h, w / 2, h / 2]) for _ in range(int(rng.integers(1, 6)))]
        for x, y, bw, bh in rects:
            cv2.rectangle(page, (int(x), int(y)), (int(x + bw), int(y + bh)), colour, thickness, cv2.LINE_AA)


LETTERS = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPRTUVWXYZ.,:;()-"  # lower case twice


def printed_text(page: np.ndarray, boxes, rng: np.random.Generator) -> None:
    """Lines of printed words beside the writing, as on forms, labels and book pages: letters
    in any Hershey face, size and weight, a word left out where its body would cross a digit's
    box (a descender may still reach under one, as print under writing does). Printed letters
    are not digit ink, however like a 1 or a 0 an l or an o is alone; a row of words says which
    they are."""
    h, w = page.shape[:2]
    size = rng.uniform(0.025, 0.1) * h
    face = HERSHEY[int(rng.integers(len(HERSHEY)))]
    scale = cv2.getFontScaleFromHeight(face, int(size))
    thickness = int(rng.integers(1, 3))
    colour = rng.uniform(0, 90, 3)
    text = np.zeros((h, w), np.uint8)  # putText draws on 8 bits; the page is float
    keep_out = [(x - 0.1 * bw, y - 0.1 * bh, x + 1.1 * bw, y + 1.1 * bh) for x, y, bw, bh in boxes]
    top, bottom = sorted(rng.uniform(0, h, 2))
    for y in np.arange(top, max(bottom, top + size), size * rng.uniform(1.5, 2.5)):
        x = rng.uniform(-0.1, 0.3) * w
        while x < w:
            word = "".join(LETTERS[int(i)] for i in rng.integers(len(LETTERS), size=int(rng.integers(1, 10))))
            (tw, th), _ = cv2.getTextSize(word, face, scale, thickness)
            if not any(x < bx1 and x + tw > bx0 and y - th < by1 and y > by0 for bx0, by0, bx1, by1 in keep_out):
                cv2.putText(text, word, (int(x), int(y)), face, scale, 255, thickness, cv2.LINE_AA)
            x += tw + size * rng.uniform(0.4, 1.0)
    alpha = text[..., None].astype(np.float32) / 255
    page[:] = page * (1 - alpha) + np.float32(colour) * alpha


def colour_curves(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour no family names: each channel through its own random tone curve (papers and
    inks of any hue, colour casts, a channel in which ink is lighter than paper), redrawn until
    typical ink (50) and paper (210) still differ in brightness by 50 of 255."""
    x = np.arange(256, dtype=np.float32) / 255
    luma = np.array([0.114, 0.587, 0.299])  # BGR
    for _ in range(20):
        lo, hi, gamma = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0.6, 1.6, 3)
        luts = [lo[c] + (hi[c] - lo[c]) * x ** gamma[c] for c in range(3)]
        ink, paper = (float(luma @ [lut[v] for lut in luts]) for v in (50, 210))
        if abs(paper - ink) >= 50:
            lut = np.stack(luts, axis=1).clip(0, 255).astype(np.uint8)[:, None, :]  # 256 x 1 x 3
            return cv2.LUT(photo, lut)
    return photo


def cluttered_background(photo: np.ndarray, ink: np.ndarray, rng: np.random.Generator, photos=()):
    """The page shrunk and warped onto a background of random texture, colour and shapes, or
    (half the time, when there are any) a real photograph (no family's desk): what is not the
    page must not be marked."""
    h, w = photo.shape[:2]
    if len(photos) and rng.random() < 0.5:
        background = real_photos.crop(photos, rng, (w, h)).astype(np.float32)
    else:
        texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), rng.uniform(1, 12))
        background = rng.uniform(20, 235, 3) + texture / max(float(texture.std()), 1e-6) * rng.uniform(5, 40)
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        a, b = (tuple(int(v) for v in rng.uniform(0, 1, 2) * [w, h]) for _ in range(2))
        shape = int(rng.integers(3))
        if shape == 0:
            cv2.line(background, a, b, colour, int(rng.integers(2, 14)), cv2.LINE_AA)
        elif shape == 1:
            cv2.circle(background, a, int(rng.integers(10, 120)), colour, int(rng.integers(-1, 12)) or 1, cv2.LINE_AA)
        else:
            cv2.rectangle(background, a, b, colour, int(rng.integers(-1, 10)) or 1)
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    scale, centre = rng.uniform(0.5, 0.9), np.float32([w, h]) * rng.uniform(0.35, 0.65, 2)
    target = (corners - [w / 2, h / 2]) * scale + centre + rng.normal(0, 0.05 * w, (4, 2))
    m = cv2.getPerspectiveTransform(corners, target.astype(np.float32))
    page = cv2.warpPerspective(photo.astype(np.float32), m, (w, h))
    inside = cv2.warpPerspective(np.ones((h, w), np.float32), m, (w, h))[..., None]
    scene = np.clip(background * (1 - inside) + page * inside, 0, 255).astype(np.uint8)
    return scene, cv2.warpPerspective(ink, m, (w, h))


def objects_over_page(photo: np.ndarray, ink: np.ndarray, rng: np.random.Generator):
    """Things lying on the page or held over it (no family's pen and mug): pens and pencils
    of any colour and thickness, some across the writing, and a hand coming in from the
    frame's edge. The ink they cover is not seen, so it is not marked."""
    h, w = photo.shape[:2]
    out, seen = photo.astype(np.float32), np.ones((h, w), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        layer = np.zeros((h, w), np.uint8)
        centre, angle = rng.uniform(0, 1, 2) * [w, h], rng.uniform(0, np.pi)
        half = rng.uniform(0.12, 0.35) * w * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(layer, tuple(int(v) for v in centre - half), tuple(int(v) for v in centre + half), 255,
                 int(rng.integers(5, 18)), cv2.LINE_AA)
        _paint(out, seen, layer, rng.uniform(0, 255, 3))
    if rng.random() < 0.4:  # a hand: a palm beyond one edge, fingers reaching in
        layer = np.zeros((h, w), np.uint8)
        side = int(rng.integers(4))
        inward = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]][side], np.float64)
        along = inward[::-1].copy()
        edge = np.array([[rng.uniform(0.2, 0.8) * w, 0], [rng.uniform(0.2, 0.8) * w, h],
                         [0, rng.uniform(0.2, 0.8) * h], [w, rng.uniform(0.2, 0.8) * h]][side])
        palm = rng.uniform(0.12, 0.22) * h
        cv2.circle(layer, tuple(int(v) for v in edge), int(palm * 1.2), 255, -1, cv2.LINE_AA)
        for k in range(4):
            base = edge + along * (k - 1.5) * palm * 0.5 + inward * palm * 0.8
            tip = base + inward * palm * rng.uniform(0.8, 1.6)
            cv2.line(layer, tuple(int(v) for v in base), tuple(int(v) for v in tip), 255, int(palm * 0.4), cv2.LINE_AA)
        _paint(out, seen, layer, np.array([rng.uniform(60, 170), rng.uniform(100, 190), rng.uniform(150, 235)]))
    return np.clip(out, 0, 255).astype(np.uint8), ink * seen


def _paint(out: np.ndarray, seen: np.ndarray, layer: np.ndarray, colour: np.ndarray) -> None:
    """An opaque object of one colour, lit from one side (a gradient across it), over the photo."""
    alpha = layer.astype(np.float32) / 255
    shade = cv2.GaussianBlur(alpha, (0, 0), 3) * 0.4 + 0.8
    out[:] = out * (1 - alpha[..., None]) + (colour * shade[..., None]) * alpha[..., None]
    seen *= 1 - alpha


def generic_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour and light no family names, each in 30% of the scenes (colour_curves, uneven_light)."""
    if rng.random() < 0.3:
        photo = colour_curves(photo, rng)
    if rng.random() < 0.3:
        photo = uneven_light(photo, rng)
    return photo


def added_light(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """veiling_light in VEIL_SHARE of the scenes: last, since it falls on all the camera sees."""
    return veiling_light(photo, rng) if rng.random() < VEIL_SHARE else photo


PHOTO_SHARE = 0.1  # generic scenes that are a real photograph alone, where nothing is ink
OBJECTS_SHARE = 0.25  # generic scenes with pens or a hand over the page
VEIL_SHARE = 0.3  # generic scenes with light added over all the camera sees (veiling_light)


def training_scene(rng: np.random.Generator, digits: np.ndarray, others: np.ndarray, exclude=(), generic: bool = False,
                   photos=()):
    """(BGR photo at the detector's size, uint8; digit ink mask at that size, bool): handwritten
    digits, or (a quarter of the scenes) printed ones; with generic randomisation and real
    photographs, some scenes are a photograph with no digit in it."""
    if generic and len(photos) and rng.random() < PHOTO_SHARE:
        # lit as the pages are below: no light may say "ink here" by being seen only with ink
        photo = added_light(generic_light(real_photos.crop(photos, rng, (640, 480)), rng), rng)
        return cv2.resize(camera(photo, rng), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), np.zeros((HEIGHT, WIDTH), bool)
    count = int(rng.integers(0, 6))
    if rng.random() < 0.25:
        tiles = [printed_digit(rng) for _ in range(count)]
    else:
        tiles = [digits[int(i)] for i in rng.integers(len(digits), size=count)]
    distract = [others[int(i)] for i in rng.integers(len(others), size=int(rng.integers(1, 4)))] \
        if rng.random() < 0.35 else []
    light_ink = "colour" not in exclude and rng.random() < 0.1
    tiles = tiles or [np.zeros((28, 28), np.uint8)]  # a page with nothing to read: a tile without ink
    printed = [draw for draw in (printed_structure, printed_text) if generic and rng.random() < 0.3]
    photo, ink = compose_scene(random_conditions(rng, exclude), tiles, rng, jpeg_quality=int(rng.integers(40, 95)),
                               with_ink=True, others=distract, light_ink=light_ink, digit_height=(0.08, 0.5),
                               furniture=printed)
    if generic:
        photo = generic_light(photo, rng)
    if generic and rng.random() < 0.3:
        photo, ink = cluttered_background(photo, ink, rng, photos)
    if generic and rng.random() < OBJECTS_SHARE:
        photo, ink = objects_over_page(photo, ink, rng)
    if generic:
        photo = added_light(photo, rng)
    photo = camera(photo, rng)
    small = cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    target = cv2.resize((ink > 0.3).astype(np.float32), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) > INK_COVERAGE
    return small, target


def draw_scenes(count: int, seed: int, digits: np.ndarray, others: np.ndarray, exclude=(), generic: bool = False,
                workers: int = 0, photos=()) -> tuple[np.ndarray, np.ndarray]:
    """(count x HEIGHT x WIDTH x 3 uint8 photos, count x HEIGHT x WIDTH bool ink masks), drawn
    by `workers` processes (0: one per CPU core); photos: real photographs (train.real_photos)."""
    seeds = np.random.SeedSequence(seed).spawn(CHUNKS)
    jobs = [(s, count // CHUNKS + (k < count % CHUNKS), tuple(exclude), generic) for k, s in enumerate(seeds)]
    jobs = [j for j in jobs if j[1]]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        _share(digits, others, photos)
        try:
            chunks = [_draw_chunk(j) for j in jobs]
        finally:
            _shared.clear()  # the digits are the caller's to keep, not this module's
    else:  # spawned, not forked: a fork of a process running torch's or OpenCV's threads may hang
        with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (digits, others, list(photos))) as pool:
            chunks = pool.map(_draw_chunk, jobs)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


_shared: dict = {}


def _start_worker(digits: np.ndarray, others: np.ndarray, photos: list) -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism: 16 workers of 16 OpenCV threads each crawl
    _share(digits, others, photos)


def _share(digits: np.ndarray, others: np.ndarray, photos=()) -> None:
    _shared["digits"], _shared["others"], _shared["photos"] = digits, others, photos


def _draw_chunk(job) -> tuple[np.ndarray, np.ndarray]:
    seed, count, exclude, generic = job
    rng = np.random.default_rng(seed)
    pairs = [training_scene(rng, _shared["digits"], _shared["others"], exclude, generic, _shared["photos"])
             for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
