"""World-model speed: imagined transitions per second, and training samples per second."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


def _matmul_flops(width: int, device) -> float:
    """The machine's bare matmul rate (FLOP/s) in this run: (4096, width) x (width, width), the
    shape of a world-model layer over a large batch. A shared machine's speed drifts by 2x
    from day to day, so the model's figures are read against this one from the same run."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a = torch.randn(4096, width, device=device)
    w = torch.randn(width, width, device=device)
    for _ in range(3):
        a @ w
    sync()
    t0, n = time.perf_counter(), 50
    for _ in range(n):
        a @ w
    sync()
    return 2 * a.shape[0] * width * width * n / (time.perf_counter() - t0)


@dataclass
class ImagineBenchConfig:
    """World-model speed: imagined transitions per second, and training samples per second."""

    checkpoint: str = "default"
    """World-model checkpoint ('default': the shipped one; a preset name: tiny, small or base untrained)."""
    batch: int = 1024
    """Action sequences imagined per call (B)."""
    horizon: int = 16
    """Steps per sequence (H)."""
    iters: int = 30
    """Timed imagine calls."""
    train_batch: int = 256
    """Windows per training step for the training-throughput figure."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default, one per core)."""
    compile: bool = False
    """Also time imagine compiled (torch.compile; inductor needs a C++ compiler on CPU, and
    compiling takes about a minute): transitions_per_s_compiled beside the eager figure."""


def bench_imagine(cfg: ImagineBenchConfig) -> dict:
    """transitions_per_s of imagine at B x H, and train_samples_per_s of the training step."""
    import torch

    from robotworld.device import pick_device
    from robotworld.model import checkpoint as ckpt
    from robotworld.model.priors import PLANNING
    from robotworld.model.train import Objective, TrainConfig
    from robotworld.model.world_model import PRESETS, ModelSpec, Start, WorldModel, model_config

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if cfg.checkpoint in PRESETS:
        model = WorldModel(ModelSpec(max_objects=3), model_config(cfg.checkpoint)).to(device)
    else:
        model = ckpt.load(cfg.checkpoint, device)
    model.eval()
    spec, L = model.spec, model.cfg.latent_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.rand(cfg.batch, L, generator=g).to(device)
    acts = (torch.rand(cfg.batch, cfg.horizon, spec.action_dim, generator=g) * 2 - 1).to(device)
    temb = model.task_emb(torch.zeros(cfg.batch, dtype=torch.long, device=device))
    B, N = cfg.batch, spec.max_objects
    # every sequence from its own start, with an observed finger: the whole path, with the priors
    # the planner imagines with
    ctx = Start(z, temb, torch.zeros_like(temb), (torch.rand(B, N, 3, generator=g) * 0.1 + 0.45).to(device),
                torch.full((B, 3), 0.5, device=device), torch.full((B, 3), 0.45, device=device),
                torch.full((B,), 0.08, device=device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(imagine) -> list[float]:
        """Seconds per call over cfg.iters calls, after three warm-up calls (a compiled one
        compiles in the first)."""
        with torch.inference_mode():
            for _ in range(3):
                imagine(ctx, acts, priors=PLANNING)
            sync()
            out = []
            for _ in range(cfg.iters):
                t0 = time.perf_counter()
                imagine(ctx, acts, priors=PLANNING)
                sync()
                out.append(time.perf_counter() - t0)
        return out

    times = timed(model.imagine)
    per_call = float(np.median(times))
    compiled: dict = {}
    if cfg.compile:
        ctimes = timed(torch.compile(model.imagine, dynamic=False))
        c = float(np.median(ctimes))
        compiled = {"imagine_ms_p50_compiled": round(c * 1e3, 2),
                    "imagine_ms_p95_compiled": round(float(np.percentile(ctimes, 95)) * 1e3, 2),
                    "transitions_per_s_compiled": round(cfg.batch * cfg.horizon / c, 1)}
    # training throughput on a batch of the training shapes
    tcfg = TrainConfig(horizon=10)
    obj = Objective(model.train(), tcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    B, H = cfg.train_batch, tcfg.horizon
    batch = {"obs": (torch.randn(B, H + 1, spec.obs_dim, generator=g) * 0.1 + 0.3).to(device),
             "action": (torch.rand(B, H, spec.action_dim, generator=g) * 2 - 1).to(device),
             "objects_real": torch.full((B,), spec.max_objects, device=device),
             "task": torch.zeros(B, dtype=torch.long, device=device), "instructions": ["pick up the red cube"] * B}
    for k in ("reward", "success", "grasp", "collision", "terminated"):
        batch[k] = torch.zeros(B, H, device=device)
    batch["mask"] = torch.ones(B, H, device=device)
    steps_t = []
    for k in range(13):
        t0 = time.perf_counter()
        loss, _ = obj(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if k >= 3:
            steps_t.append(time.perf_counter() - t0)
    return {"device": str(device), "torch_threads": torch.get_num_threads(),
            "model": model.cfg.preset, "latent_dim": L, "hidden_dim": model.cfg.hidden_dim,
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch": cfg.batch, "horizon": cfg.horizon,
            "imagine_ms_p50": round(per_call * 1e3, 2),
            "imagine_ms_p95": round(float(np.percentile(times, 95)) * 1e3, 2),
            "transitions_per_s": round(cfg.batch * cfg.horizon / per_call, 1), **compiled,
            "train_batch": B, "train_horizon": H,
            "train_samples_per_s": round(B / float(np.median(steps_t)), 1),
            "matmul_gflops": round(_matmul_flops(model.cfg.hidden_dim, device) / 1e9, 2)}
