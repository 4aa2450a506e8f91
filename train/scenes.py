"""Everyday scenes: digits on the pages and in the light people really have.

Each family is one condition the reader must survive, drawn around digits written in a row
(train.photos.layout_ink): printed page structure (ruled lines with a margin, squared
paper, form boxes), light (a hard-edged shadow, dim and noisy, glare), colour (coloured ink
on coloured paper), and geometry (the page lying at an angle on a desk among other things).
The tiles decide what is written: MNIST *test* digits for evaluation (bench.wild), never
the training digits. render_scene is seeded and deterministic for a given rng.
"""
from __future__ import annotations

import cv2
import numpy as np

from digitpipe.train.photos import layout_ink

W, H = 640, 480


def _paper(rng, shade=(185, 235)) -> np.ndarray:
    """Plain paper under a soft light gradient, BGR float32."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx / W + np.sin(angle) * yy / H) * rng.uniform(10, 40)
    gray = rng.uniform(*shade) + gradient - gradient.mean()
    return np.repeat(gray[..., None], 3, axis=2) * rng.uniform(0.92, 1.0, 3)


def _lines(page, positions, horizontal: bool, colour, thickness: int) -> None:
    for p in positions:
        p = int(p)
        if horizontal:
            cv2.line(page, (0, p), (W, p), colour, thickness, cv2.LINE_AA)
        else:
            cv2.line(page, (p, 0), (p, H), colour, thickness, cv2.LINE_AA)


def ruled(page, boxes, rng) -> None:
    """Notebook paper: blue rules about a digit's height apart, a red margin line."""
    height = np.mean([b[3] for b in boxes])
    step = height * rng.uniform(0.45, 1.0)
    _lines(page, np.arange(rng.uniform(0, step), H, step), True, (215, 170, 120), int(rng.integers(1, 3)))
    margin = min(b[0] for b in boxes) - rng.uniform(10, 60)
    if margin > 10:
        _lines(page, [margin], False, (90, 90, 215), int(rng.integers(2, 4)))


def grid(page, boxes, rng) -> None:
    """Squared paper: light lines both ways, 3-8 squares to a digit."""
    height = np.mean([b[3] for b in boxes])
    step = height / rng.uniform(2.5, 8)
    colour = tuple(float(c) for c in rng.choice([(205, 180, 150), (170, 170, 170), (160, 200, 160)]))
    _lines(page, np.arange(rng.uniform(0, step), H, step), True, colour, 1)
    _lines(page, np.arange(rng.uniform(0, step), W, step), False, colour, 1)


def form(page, boxes, rng) -> None:
    """A form: each digit written in its own printed box (comb boxes), lines touching the ink."""
    pad = rng.uniform(0.0, 0.25)
    thickness = int(rng.integers(1, 4))
    for x, y, w, h in boxes:
        size = max(w, h) * (1 + pad)
        cx, cy = x + w / 2, y + h / 2
        cv2.rectangle(page, (int(cx - size / 2), int(cy - size / 2)), (int(cx + size / 2), int(cy + size / 2)),
                      (60, 60, 60), thickness, cv2.LINE_AA)


FURNITURE = {"ruled": ruled, "grid": grid, "form": form}


def shadow(photo, rng, depth=(0.35, 0.65)) -> np.ndarray:
    """A hard-edged shadow (a hand, a phone) across part of the page, edge through the digits;
    depth: how much of the light it takes."""
    x0, x1 = rng.uniform(0.2, 0.8, 2) * W
    poly = np.array([[x0, 0], [x1, H], [0 if rng.random() < 0.5 else W, H], [0 if rng.random() < 0.5 else W, 0]],
                    np.int32)
    mask = np.zeros((H, W), np.float32)
    cv2.fillPoly(mask, [poly], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, 2.0))
    return photo * (1 - mask[..., None] * rng.uniform(*depth))


def dim(photo, rng, light=(0.12, 0.3)) -> np.ndarray:
    """A dim room: little light, so strong sensor noise once the camera brightens it."""
    level = rng.uniform(*light)
    noisy = photo * level + rng.normal(0, rng.uniform(1.5, 3.0), photo.shape)
    return noisy / level * rng.uniform(0.5, 0.8)  # the camera's gain, short of full exposure


def glare(photo, rng) -> np.ndarray:
    """Light reflected off glossy paper: a bright patch washing out part of the page."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * H
    sx, sy = rng.uniform(60, 200), rng.uniform(40, 150)
    blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
    return photo + blob[..., None] * rng.uniform(90, 200)


LIGHT = {"shadow": shadow, "dim": dim, "glare": glare}

PAPERS = [(150, 235, 250), (200, 190, 250), (250, 215, 175), (190, 240, 200), (235, 235, 235)]  # BGR: yellow, pink, blue, green, white
INKS = [(150, 60, 20), (40, 40, 190), (50, 120, 40), (120, 40, 110), (20, 20, 20)]  # blue, red, green, purple, black


def page_on_desk(photo, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The page does not fill the frame: smaller, turned and in perspective, on a desk with a
    pen and a mug beside it. -> (the scene, the page's perspective transform, where the pen
    and the mug cover it: 0..1, H x W; ink under them is not seen, so it is no ink to mark)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    wood = rng.uniform(60, 130) + 18 * np.sin(xx / rng.uniform(6, 20) + 3 * np.sin(yy / 40)) + rng.normal(0, 4, (H, W))
    desk = np.stack([wood * 0.55, wood * 0.75, wood], axis=2).astype(np.float32)
    scale = rng.uniform(0.6, 0.85)
    corners = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    centre = np.float32([W / 2 + rng.uniform(-60, 60), H / 2 + rng.uniform(-40, 40)])
    angle = np.deg2rad(rng.uniform(-20, 20))
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = (corners - [W / 2, H / 2]) * scale @ rot.T + centre + rng.normal(0, 12, (4, 2)).astype(np.float32)
    m = cv2.getPerspectiveTransform(corners, target.astype(np.float32))
    page = cv2.warpPerspective(photo.astype(np.float32), m, (W, H), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones((H, W), np.float32), m, (W, H), flags=cv2.INTER_LINEAR)[..., None]
    scene = desk * (1 - inside) + page * inside
    # a pen and a mug's rim, on the desk or over the page's edge, drawn on the scene and on `covered` alike
    covered = np.zeros((H, W), np.uint8)
    p0 = rng.uniform([0, 0], [W, H])
    p1 = p0 + rng.uniform(120, 260) * np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)])
    ends, width = [tuple(int(v) for v in p) for p in (p0, p1)], int(rng.integers(6, 12))
    cv2.line(scene, *ends, (30, 30, 30), width, cv2.LINE_AA)
    cv2.line(covered, *ends, 255, width, cv2.LINE_AA)
    corner = (int(rng.choice([40, W - 40])), int(rng.choice([40, H - 40])))
    radius, width = int(rng.integers(40, 70)), int(rng.integers(8, 14))
    cv2.circle(scene, corner, radius, (200, 200, 210), width, cv2.LINE_AA)
    cv2.circle(covered, corner, radius, 255, width, cv2.LINE_AA)
    return scene, m, covered.astype(np.float32) / 255


FAMILIES = ("ruled", "grid", "form", "shadow", "dim", "glare", "colour", "desk")


def render_scene(family: str, tiles: list[np.ndarray], rng: np.random.Generator, jpeg_quality: int = 85,
                 with_ink: bool = False):
    """A BGR photo of the tiles written in a row under one family's condition; with_ink, also
    the digits' ink coverage (0..1, h x w) where it lies in the photo."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; choose from {', '.join(FAMILIES)}")
    return compose_scene((family,), tiles, rng, jpeg_quality=jpeg_quality, with_ink=with_ink)


def compose_scene(conditions, tiles: list[np.ndarray], rng: np.random.Generator, jpeg_quality: int = 85,
                  with_ink: bool = False, others: list[np.ndarray] = (), light_ink: bool = False,
                  digit_height=(0.18, 0.4), furniture=(), light=LIGHT, ink_shade=(25, 70)):
    """A photo under any combination of the families' conditions (none: plain paper). others:
    light-on-dark tiles of ink that is no digit (letters, doodles), written in a second row
    and left out of the returned ink; light_ink: chalk-like ink lighter than a dark board;
    furniture: more f(page, boxes, rng) that print on the page before the ink goes on;
    light: the light conditions' functions by name (LIGHT, or ones drawn past its range);
    ink_shade: the dark ink's grey level range."""
    conditions = set(conditions)
    ink, boxes = layout_ink(tiles, rng, (W, H), rng.uniform(*digit_height) * H, gap=(0.08, 0.3))
    other = layout_ink(list(others), rng, (W, H), rng.uniform(0.1, 0.3) * H)[0] if len(others) else np.zeros_like(ink)
    other[ink > 0] = 0
    page = _paper(rng, (20, 80) if light_ink else (185, 235))
    if "colour" in conditions:
        ink_colour = np.array(INKS[int(rng.integers(len(INKS)))], np.float32)
        page = page / page.mean() * np.array(PAPERS[int(rng.integers(len(PAPERS)))], np.float32) * rng.uniform(0.85, 1.0)
    else:
        ink_colour = np.array(rng.uniform(190, 250, 3) if light_ink else rng.uniform(*ink_shade, 3), np.float32)
    for name in FURNITURE:
        if name in conditions:
            FURNITURE[name](page, boxes, rng)
    for draw in furniture:
        draw(page, boxes, rng)
    written = np.maximum(ink, other)[..., None]
    photo = page * (1 - written) + ink_colour * written
    for name in LIGHT:
        if name in conditions:
            photo = light[name](photo, rng)
    if "desk" in conditions:
        photo, m, covered = page_on_desk(photo, rng)
        ink = cv2.warpPerspective(ink, m, (W, H), flags=cv2.INTER_LINEAR) * (1 - covered)
    photo = photo + rng.normal(0, 3, photo.shape)
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    photo = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return (photo, ink) if with_ink else photo
