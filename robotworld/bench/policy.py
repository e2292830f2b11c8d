"""Decision latency of the VLA alone and of the VLA that imagines first (``robotworld bench policy``).

A decision is what a policy does between an observation and the chunk it returns: for ``vla``
the camera and language encoding plus one flow-matching sample; for ``vla+imagine`` k samples,
one batched world-model scoring of them, and the choice. The observations are real frames of a
MuJoCo episode (the expert driving), so the timing includes everything a robot would pay for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from robotworld.bench.imagine import _matmul_flops


@dataclass
class PolicyBenchConfig:
    """Decision latency of vla and vla+imagine."""

    vla: str = "default"
    """VLA checkpoint."""
    world_model: str = "default"
    """World-model checkpoint that vla+imagine scores with."""
    task: str = "pick_place"
    """Task whose frames the decisions are made on."""
    candidates: int = 16
    """Chunks vla+imagine samples and scores per decision (k)."""
    refine: str = "rejected"
    """vla+imagine's MPC refinement: rejected, always or never (``ImagineConfig.refine``)."""
    decisions: int = 50
    """Timed decisions per policy (after three warm-up decisions)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""


def _frames(cfg: PolicyBenchConfig, overrides: dict, n: int) -> tuple[list[dict], object]:
    """n observations along an expert episode (reset again when one ends), and its scene."""
    import sims
    from policies import ExpertPolicy
    from robotworld.policy import Scene

    env = sims.make(cfg.task, **overrides)
    expert = ExpertPolicy()
    obs, _ = env.reset(seed=0)
    expert.reset(0, Scene.of(env))
    scene, out = Scene.of(env), []
    while len(out) < n:
        out.append(obs)
        obs, _, term, trunc, _ = env.step(expert.act(obs)[0])
        if term or trunc:
            obs, _ = env.reset(seed=len(out))
            expert.reset(len(out), Scene.of(env))
    env.close()
    return out, scene


def _time(policy, frames: list[dict], sync) -> list[float]:
    ms = []
    for k, obs in enumerate(frames):
        sync()
        t0 = time.perf_counter()
        policy.act(obs)
        sync()
        if k >= 3:
            ms.append(1000 * (time.perf_counter() - t0))
    return ms


def bench_policy(cfg: PolicyBenchConfig) -> dict:
    """decision_ms_p50 / p95 of vla and vla+imagine, what imagination adds, and the run's bare
    matmul rate as the machine's reference."""
    import torch

    from policies.vla import ImagineConfig, ImaginePolicy, VLAPolicy, VLAPolicyConfig
    from robotworld.device import pick_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.decisions < 1 or cfg.candidates < 1:
        raise ValueError(f"decisions = {cfg.decisions}, candidates = {cfg.candidates}: expected at least 1 each")
    device = pick_device(cfg.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    vla = VLAPolicy(VLAPolicyConfig(cfg.vla, device=str(device)))
    imagine = ImaginePolicy(ImagineConfig(vla=cfg.vla, world_model=cfg.world_model, candidates=cfg.candidates,
                                          refine=cfg.refine, device=str(device)))
    frames, scene = _frames(cfg, vla.env_overrides, cfg.decisions + 3)
    out: dict = {"task": cfg.task, "device": str(device), "threads": torch.get_num_threads(),
                 "candidates": cfg.candidates, "chunk": vla.model.cfg.chunk, "decisions": cfg.decisions}
    for name, policy in (("vla", vla), ("vla+imagine", imagine)):
        policy.reset(0, scene)
        ms = np.array(_time(policy, frames, sync))
        out[f"{name}_decision_ms_p50"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}_decision_ms_p95"] = round(float(np.percentile(ms, 95)), 2)
    out["imagination_adds_ms_p50"] = round(out["vla+imagine_decision_ms_p50"] - out["vla_decision_ms_p50"], 2)
    out["imagination_adds_ms_p95"] = round(out["vla+imagine_decision_ms_p95"] - out["vla_decision_ms_p95"], 2)
    out["matmul_gflops"] = round(_matmul_flops(256, device) / 1e9, 2)
    return out
