"""The learned collision predictor against the exact checker."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class CollisionBenchConfig:
    """Learned collision predictor against the exact checker on held-out scenes."""

    checkpoint: str = "default"
    """Collision-predictor checkpoint ('default': the shipped one)."""
    queries: int = 200_000
    """Held-out queries for recall and precision (16 poses per scene)."""
    speed_queries: int = 262_144
    """Queries timed for each checker, all in one scene (a planner's case)."""
    chunk: int = 4096
    """Queries per torch call of the learned predictor."""
    seed: int = 0
    """Seed of the held-out scenes (a stream training never draws from)."""
    device: str = "auto"
    """Device of the learned predictor: auto, cpu or cuda."""


def bench_collision(cfg: CollisionBenchConfig) -> dict:
    """recall / precision at the operating threshold, and queries/s of both checkers."""
    import torch

    from robotworld.collision import train as ctrain
    from robotworld.collision.exact import ExactChecker
    from robotworld.device import pick_device

    device = pick_device(cfg.device)
    model = ctrain.load(cfg.checkpoint, device)
    checker = ExactChecker(max_obstacles=model.cfg.max_obstacles)
    # training draws from streams [seed, 0] and [seed, 1]; these scenes come from [seed, 2]
    q, scenes, labels = ctrain.labelled(np.random.default_rng([cfg.seed, 2]), cfg.queries, checker)
    out: dict = {"device": str(device), "held_out_queries": cfg.queries,
                 "held_out_scenes": -(-cfg.queries // 16),
                 "thresholds": [round(float(t), 4) for t in model.threshold.cpu()]}
    out.update(ctrain.evaluate(model, q, scenes, labels, device))

    sq, sscenes = ctrain.sample_queries(np.random.default_rng([cfg.seed, 3]), cfg.speed_queries)
    scene = sscenes[0]
    checker.check(sq[:cfg.chunk], scene)  # warm-up
    t0 = time.perf_counter()
    checker.check(sq, scene)
    exact_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    qt = torch.as_tensor(sq, dtype=torch.float32, device=device)
    st = torch.as_tensor(scene, dtype=torch.float32, device=device)
    chunk = cfg.chunk if device.type == "cpu" else len(qt)
    with torch.inference_mode():
        model.logits(qt[:chunk], st)  # warm-up
        sync()
        t0 = time.perf_counter()
        for lo in range(0, len(qt), chunk):
            model.predict(qt[lo:lo + chunk], st)
        sync()
        learned_s = time.perf_counter() - t0
    out["exact_threads"] = checker.nthread
    out["torch_threads"] = torch.get_num_threads()
    out["exact_queries_per_s"] = round(cfg.speed_queries / exact_s, 1)
    out["learned_queries_per_s"] = round(cfg.speed_queries / learned_s, 1)
    out["learned_vs_exact"] = round(exact_s / learned_s, 3)
    return out
