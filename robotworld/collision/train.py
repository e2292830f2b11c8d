"""Training, thresholds, evaluation and checkpoints of the learned collision predictor.

Queries are drawn as a planner meets them: obstacles from the ``pick_place_clutter`` scene
sampler, and joint configurations a third each uniform over the joint limits, around the home
pose, and reaching into or around an obstacle (:func:`sample_queries`). Labels come from
:class:`ExactChecker`. The operating threshold
of each head is the highest that keeps recall on a validation set of other scenes at or above
``target_recall``; the figures are then measured on a third set of held-out scenes.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotworld.collision.configs import CollisionTrainConfig
from robotworld.collision.exact import ExactChecker
from robotworld.collision.learned import CollisionPredictor, PredictorConfig
from robotworld.model.checkpoint import CheckpointError
from sims import robot

FORMAT = "robotworld-collision-predictor"
FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "collision.pt"
HEADS = ("self", "world")


class CollisionCheckpointError(CheckpointError):
    """A file that is not a usable collision-predictor checkpoint; the message says why."""


def sample_queries(rng: np.random.Generator, n: int, num_obstacles: int = 3,
                   poses_per_scene: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """n joint configurations (n, 7) and their clutter scenes (n, K, 6).

    Scenes come from the pick_place_clutter sampler, each shared by poses_per_scene
    consecutive poses (drawing a scene costs far more than labelling a pose). Poses are a
    third each: uniform over the joint limits; around the home pose (a tool over the table);
    and reaching for a point in or around one of the scene's obstacles. Uniform poses alone
    would almost never go near an obstacle (0.05% of them touch one), and the region near
    obstacles is where a planner needs the predictor to be right.
    """
    import sims
    from sims import tasks

    cfg = sims.make_config("pick_place_clutter", num_obstacles=num_obstacles)
    n_scenes = -(-n // poses_per_scene)
    drawn = np.empty((n_scenes, num_obstacles, 6))
    for i in range(n_scenes):
        ep = tasks.sample_pick_place(rng, cfg)
        drawn[i] = [np.concatenate((o.pos, o.half)) for o in ep.obstacles]
    scenes = np.repeat(drawn, poses_per_scene, axis=0)[:n]
    kind = rng.integers(0, 3, n)  # 0 uniform, 1 around home, 2 near an obstacle
    q = rng.uniform(robot.Q_MIN, robot.Q_MAX, (n, 7))
    home = kind == 1
    q[home] = np.clip(robot.HOME_Q + rng.normal(0.0, 0.6, (int(home.sum()), 7)),
                      robot.Q_MIN, robot.Q_MAX)
    near = np.flatnonzero(kind == 2)
    if len(near) and num_obstacles:
        q[near] = _reach_towards_obstacles(rng, scenes[near])
    return q, scenes


def _reach_towards_obstacles(rng: np.random.Generator, scenes: np.ndarray, steps: int = 40,
                             chunk: int = 65536) -> np.ndarray:
    """Poses whose fingers reach for a random point in or around one obstacle of each scene.

    Batched inverse kinematics by gradient descent through the predictor's kinematics layer,
    from the home pose with some noise; stopping after a fixed number of steps leaves poses
    that touch, graze and just miss the obstacle.
    """
    from robotworld.collision.learned import ARM_BODIES, Kinematics

    kin = Kinematics()
    fingers = torch.as_tensor(np.isin(kin.owner, [ARM_BODIES.index("finger_left"),
                                                  ARM_BODIES.index("finger_right")]))
    n = len(scenes)
    box = scenes[np.arange(n), rng.integers(0, scenes.shape[1], n)]
    target = box[:, :3] + rng.uniform(-1, 1, (n, 3)) * (box[:, 3:] + [0.05, 0.05, 0.0])
    target[:, 2] = rng.uniform(0.0, 2 * box[:, 5] + 0.08)
    start = np.clip(robot.HOME_Q + rng.normal(0.0, 0.3, (n, 7)), robot.Q_MIN, robot.Q_MAX)
    lo, hi = (torch.as_tensor(v, dtype=torch.float32) for v in (robot.Q_MIN, robot.Q_MAX))
    out = np.empty((n, 7))
    for a in range(0, n, chunk):
        q = torch.tensor(start[a:a + chunk], dtype=torch.float32, requires_grad=True)
        goal = torch.as_tensor(target[a:a + chunk], dtype=torch.float32)
        opt = torch.optim.Adam([q], lr=0.05)
        finger = torch.full((len(q),), robot.FINGER_MAX)
        for _ in range(steps):
            tool = kin(q, finger)[:, fingers].mean(1)
            loss = ((tool - goal) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                q.copy_(torch.minimum(torch.maximum(q, lo), hi))
        out[a:a + chunk] = q.detach().double().numpy()
    return np.clip(out, robot.Q_MIN, robot.Q_MAX)


def labelled(rng: np.random.Generator, n: int, checker: ExactChecker):
    """Queries and their exact labels: q (n, 7), scenes (n, K, 6), labels (n, 2) float."""
    q, scenes = sample_queries(rng, n, checker.max_obstacles)
    hits = checker.check(q, scenes)
    return q, scenes, np.stack([hits["self"], hits["world"]], axis=1).astype(np.float32)


@torch.no_grad()
def reachable_pairs(q: np.ndarray, margin_cm: float, chunk: int = 8192) -> tuple[int, ...]:
    """Candidate self pairs that come within margin_cm of touching in some pose of q.

    The others stay apart everywhere inside the joint limits (q samples them densely), so
    reading them only costs time.
    """
    full = CollisionPredictor()
    closest = torch.full((full.num_pairs,), float("inf"))
    for lo in range(0, len(q), chunk):
        qt = torch.as_tensor(q[lo:lo + chunk], dtype=torch.float32)
        _, _, gaps = full.features(qt, qt.new_zeros((1, 0, 6)), qt.new_full((len(qt),), robot.FINGER_MAX))
        closest = torch.minimum(closest, gaps.amin(0))
    return tuple(int(i) for i in torch.nonzero(closest < margin_cm).flatten())


def recall_precision(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((pred & truth).sum())
    return tp / max(float(truth.sum()), 1.0), tp / max(float(pred.sum()), 1.0)


@torch.no_grad()
def probabilities(model: CollisionPredictor, q: np.ndarray, scenes: np.ndarray,
                  device: torch.device, chunk: int = 8192) -> np.ndarray:
    """(n, 2) probabilities of self and world collision."""
    out = []
    for lo in range(0, len(q), chunk):
        qt = torch.as_tensor(q[lo:lo + chunk], dtype=torch.float32, device=device)
        st = torch.as_tensor(scenes[lo:lo + chunk], dtype=torch.float32, device=device)
        out.append(torch.sigmoid(model.logits(qt, st)).cpu().numpy())
    return np.concatenate(out)


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, target_recall: float) -> list[float]:
    """Per head, the highest threshold whose recall on (probs, labels) is >= target_recall."""
    out = []
    for h in range(probs.shape[1]):
        pos = np.sort(probs[labels[:, h] > 0.5, h])
        if len(pos) == 0:
            out.append(0.5)
            continue
        k = int(np.floor((1.0 - target_recall) * len(pos)))  # positives allowed below it
        out.append(float(np.nextafter(pos[k], 0.0)))  # strictly below the k-th: it stays in
    return out


def evaluate(model: CollisionPredictor, q, scenes, labels, device) -> dict[str, float]:
    """Recall and precision of each head at its operating threshold."""
    probs = probabilities(model, q, scenes, device)
    thr = model.threshold.cpu().numpy()
    out: dict[str, float] = {}
    for h, name in enumerate(HEADS):
        rec, prec = recall_precision(probs[:, h] > thr[h], labels[:, h] > 0.5)
        out[f"{name}_recall"], out[f"{name}_precision"] = round(rec, 5), round(prec, 5)
        out[f"{name}_positive_rate"] = round(float(labels[:, h].mean()), 5)
    hit, truth = (probs > thr).any(1), (labels > 0.5).any(1)
    out["recall"], out["precision"] = (round(v, 5) for v in recall_precision(hit, truth))
    return out


def train(cfg: CollisionTrainConfig) -> dict[str, Any]:
    """Label queries with the exact checker, fit the predictor, set thresholds, save it."""
    from tqdm import tqdm

    from robotworld.device import pick_device
    from robotworld.paths import writable_file

    device = pick_device(cfg.device)
    writable_file(cfg.out, "collision checkpoint")
    torch.manual_seed(cfg.seed)
    checker = ExactChecker(max_obstacles=3)
    t0 = time.perf_counter()
    q, scenes, y = labelled(np.random.default_rng([cfg.seed, 0]), cfg.queries, checker)
    vq, vscenes, vy = labelled(np.random.default_rng([cfg.seed, 1]), cfg.val_queries, checker)
    label_s = time.perf_counter() - t0
    model = CollisionPredictor(PredictorConfig(
        hidden=cfg.hidden, max_obstacles=3, self_pairs=reachable_pairs(q, cfg.pair_margin_cm))).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s / cfg.steps, 1.0))))
    qt = torch.as_tensor(q, dtype=torch.float32, device=device)
    st = torch.as_tensor(scenes, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, device=device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="collision predictor", disable=not cfg.progress)
    for step in bar:
        idx = torch.randint(len(qt), (cfg.batch,), generator=gen).to(device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.logits(qt[idx], st[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    thr = choose_thresholds(probabilities(model, vq, vscenes, device), vy, cfg.target_recall)
    model.threshold.copy_(torch.tensor(thr))
    metrics = {"validation": evaluate(model, vq, vscenes, vy, device),
               "label_seconds": round(label_s, 2), "thresholds": thr}
    save(cfg.out, model, {"train_config": asdict(cfg), "metrics": metrics})
    return {"checkpoint": cfg.out, **metrics}


# ---- checkpoints ----------------------------------------------------------------------------
def save(path: str | os.PathLike, model: CollisionPredictor, extra: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary name, then rename)."""
    from robotworld.model.checkpoint import save_atomic, weights_checksum

    sd = model.state_dict()
    save_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(model.cfg),
                       "state_dict": sd, "checksum": weights_checksum(sd), **extra})


def load(path: str | os.PathLike = "default", device: Any = "cpu") -> CollisionPredictor:
    """A predictor from a checkpoint ('default': the shipped one), in eval mode."""
    from robotworld.model.checkpoint import read_format

    path = SHIPPED if str(path) == "default" else Path(path)
    if not path.is_file():
        raise CollisionCheckpointError(f"collision checkpoint '{path}' does not exist; train one "
                                       "with `robotworld train collision`")
    body = read_format(path, FORMAT, FORMAT_VERSION, "collision", device, CollisionCheckpointError)
    model = CollisionPredictor(PredictorConfig(**body["config"]))
    model.load_state_dict(body["state_dict"])
    return model.to(device).eval()
