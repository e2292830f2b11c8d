"""Video frames that show what a policy imagined: the candidates' imagined tool paths drawn over
the video camera's image (``sims.scene.SHOWCASE``), coloured by their predicted outcome, the
chosen one marked, with the instruction and the episode's state written on the frame."""

from __future__ import annotations

import math

import numpy as np

# predicted outcome -> colour (RGB)
COLLIDES, SUCCEEDS, HOLDS, OTHER, CHOSEN = (230, 60, 50), (60, 200, 90), (70, 170, 230), (240, 200, 60), (255, 255, 255)


def project(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (..., 2) of world points (..., 3) in the video camera, and whether each
    is in front of it (...,)."""
    from sims.scene import SHOWCASE, look_at

    pos = np.asarray(SHOWCASE["pos"], float)
    axes = np.asarray(look_at(SHOWCASE["pos"], SHOWCASE["target"])).reshape(2, 3)
    x, y = axes
    fwd = np.cross(y, x)  # the camera looks along -z = y x x
    rel = np.asarray(points, float) - pos
    depth = rel @ fwd
    f = (height / 2) / math.tan(math.radians(SHOWCASE["fovy"]) / 2)
    safe = np.where(depth > 1e-3, depth, 1e-3)
    uv = np.stack((width / 2 + f * (rel @ x) / safe, height / 2 - f * (rel @ y) / safe), -1)
    return uv, depth > 1e-3


def outcome_colour(success: np.ndarray, grasp: np.ndarray, collision: np.ndarray) -> tuple[int, int, int]:
    """The colour of one candidate from its imagined per-step probabilities (H,)."""
    if collision.max() > 0.5:
        return COLLIDES
    if success.max() >= 0.5:
        return SUCCEEDS
    if grasp.max() >= 0.5:
        return HOLDS
    return OTHER


def draw(frame: np.ndarray, instruction: str, status: str, info: dict | None = None) -> np.ndarray:
    """frame (H, W, 3) uint8 with the imagined candidates of ``info`` (a policy's ``last_info``:
    ``imagined`` tool paths (k, H, 3) and outcome probabilities, ``choice``, ``reason``) drawn,
    and the instruction and status written on it."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    im = (info or {}).get("imagined")
    if im is not None:
        uv, ok = project(im["tool"], h, w)
        choice = info.get("choice", -1)
        order = [k for k in range(len(uv)) if k != choice] + ([choice] if choice is not None and choice >= 0 else [])
        for k in order:
            pts = [tuple(p) for p, v in zip(uv[k], ok[k]) if v]
            if len(pts) < 2:
                continue
            colour = outcome_colour(im["success"][k], im["grasp"][k], im["collision"][k])
            if k == choice:
                d.line(pts, fill=CHOSEN, width=5)
            d.line(pts, fill=colour, width=3 if k == choice else 1)
    d.rectangle((0, 0, w, 22), fill=(20, 20, 24))
    d.text((8, 5), instruction, fill=(255, 255, 255))
    d.rectangle((0, h - 22, w, h), fill=(20, 20, 24))
    d.text((8, h - 17), status, fill=(255, 255, 255))
    if im is not None:
        legend = (("collides", COLLIDES), ("succeeds", SUCCEEDS), ("holds", HOLDS), ("other", OTHER), ("chosen", CHOSEN))
        x = w - 8 - 70 * len(legend)
        for name, colour in legend:
            d.rectangle((x, 30, x + 10, 40), fill=colour)
            d.text((x + 14, 29), name, fill=(20, 20, 24))
            x += 70
    return np.asarray(img)
