"""Planner latency over the world model, its flops fraction, and pytorch_mppi on the same model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from robotworld.bench.imagine import _matmul_flops


@dataclass
class PlannerBenchConfig:
    """Planner latency over the world model, and its arithmetic efficiency."""

    checkpoint: str = "default"
    """World-model checkpoint."""
    task: str = "pick_place"
    """Task whose first observation the plans start from."""
    plans: int = 20
    """Timed plans per setting (after two warm-up plans)."""
    method: str = "mppi"
    """mppi or cem."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    compile: bool = False
    """Compile every iteration of a plan as one function (one CUDA graph a plan on a GPU);
    compile time is not counted."""
    vs: str = ""
    """Also time a peer planner on the same model, samples, horizon and iterations:
    pytorch_mppi (pip install pytorch-mppi, in robotworld's dev extra)."""
    settings: str = "1024x16x6,512x16x6,256x8x4"
    """Comma-separated SAMPLESxHORIZONxITERATIONS to time; the first is the headline
    (plan_ms_p50 / p95, flops_fraction and the peer comparison)."""
    batch_envs: int = 0
    """Also time one plan for this many environments at once (each from its own first
    observation, the headline's setting each): batch_plan_ms_p50 / p95 and batch_plans_per_s.
    0: not timed."""
    tf32: bool = False
    """Let CUDA matmuls use TF32 (the tensor cores' float32 mode), the bare matmul too."""


def parse_settings(text: str) -> list[tuple[int, int, int]]:
    """'1024x16x6,256x8x4' -> [(1024, 16, 6), (256, 8, 4)]; a clear error otherwise."""
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"settings: '{item}' is not SAMPLESxHORIZONxITERATIONS with positive integers "
                             "(e.g. 1024x16x6)")
        out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def _pytorch_mppi_plan_s(model, cost, env, device, plans: int, samples: int = 1024,
                         horizon: int = 16, iterations: int = 6) -> list[float]:
    """Seconds per plan of pytorch_mppi's MPPI over the same world model and cost terms.

    Its state is the latent with the summed actions beside it, its dynamics the model's latent
    step, and its running cost the outcomes ``imagine`` composes (reward
    and success from the imagined geometry, collision with the tool path), discounted as ours,
    with the Q ensemble after the horizon as its terminal cost when the value weight is set;
    one plan is ``iterations`` refinements of one command.
    """
    import torch
    try:
        from pytorch_mppi import MPPI
    except ImportError as e:
        raise ValueError("--vs pytorch_mppi needs pytorch_mppi: pip install pytorch-mppi "
                         "(it is in robotworld's dev extra)") from e

    from robotworld.model.priors import touched

    w, start = cost.w, cost.situation.start
    temb = start.task
    tk = temb.expand(samples, -1)
    A, L = env.action_space.shape[0], model.cfg.latent_dim
    z_start = start.latent.expand(samples, -1)
    first = model.read(start.latent, temb)["object_pos"][:, None, :1]  # at the start, (1, 1, 1, 3)
    obj_start = start.objects[:, :1]

    # its state is the latent with the summed actions beside it (the tool path reads both)
    def dynamics(x, u):
        return torch.cat((model.next(x[:, :L], u, tk[:len(x)]), x[:, L:] + u), -1)

    def running_cost(x, u, t):
        # the outcomes of one imagined step from its state, as WorldModel.imagine composes them
        # (the peer's form: a state, not a sequence), with the touch gate and without the
        # gripper's, which needs the sequence
        z, n = x[:, None, :L], len(x)
        heads = model.read(z, tk[:n])
        tool = model.tool_path(z_start[:n], z, x[:, None, L:], start.tool)  # (n, 1, 3)
        moved = torch.sigmoid(model.moved_logits(z_start[:n], z)[..., :1]) * touched(tool.transpose(0, 1),
                                                                                        obj_start)[0, :, None]
        obj = (obj_start[:, None] + moved[..., None] * (heads["object_pos"][:, :, :1] - first))[:, :, 0]
        grasp = model.grasp_prob(heads["grasp"], tool, obj)
        collision = torch.sigmoid(heads["collision"] + model.contact_logit(tool))
        reward, success = model.outcomes(tool, obj, start.goal[:, None].expand_as(tool), grasp, tk[:n])
        gain = w.reward * reward + w.success * torch.sigmoid(success)
        return (w.gamma ** t * -gain + w.collision * collision)[:, 0]

    def terminal(states, actions):
        z, a = states[0, :, -1, :L], actions[0, :, -1]
        return -w.value * w.gamma ** horizon * model.q_values(z, a, tk[:len(z)]).mean(0)

    # step-dependent, so that the running cost gets the step index for the discount
    ctl = MPPI(lambda x, u, t: dynamics(x, u), running_cost, L + A,
               noise_sigma=0.25 * torch.eye(A, device=device), num_samples=samples,
               horizon=horizon, device=device, terminal_state_cost=terminal if w.value else None, lambda_=0.5,
               u_min=torch.as_tensor(env.action_space.low, device=device),
               u_max=torch.as_tensor(env.action_space.high, device=device),
               step_dependent_dynamics=True)
    z0 = torch.cat((start.latent[0], torch.zeros(A, device=device)))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for k in range(plans + 2):
            sync()
            t0 = time.perf_counter()
            for i in range(iterations):
                ctl.command(z0, shift_nominal_trajectory=(i == 0))
            sync()
            if k >= 2:
                times.append(time.perf_counter() - t0)
    return times


def _linear_macs(module) -> int:
    from torch import nn

    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def bench_planner(cfg: PlannerBenchConfig) -> dict:
    """plan_ms p50 / p95 at each setting (by default 1024x16x6, 512x16x6 and 256x8x4), and
    flops_fraction at the first."""
    import torch

    import sims
    from robotworld.device import pick_device
    from robotworld.model import checkpoint as ckpt
    from robotworld.planning import Planner, PlannerConfig, WorldModelCost
    from robotworld.planning.costs import stack_observations

    settings = parse_settings(cfg.settings)
    if cfg.batch_envs < 0:
        raise ValueError(f"batch_envs = {cfg.batch_envs}: expected 0 (off) or a number of environments")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    model = ckpt.load(cfg.checkpoint, device)
    env = sims.make(cfg.task)
    obs, _ = env.reset(seed=0)
    cost = WorldModelCost(model)
    cost.observe(obs, cfg.task)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # multiply-adds per imagined transition on the cost's path (WorldModel.imagine, objects="first"):
    # the dynamics, the heads' hidden layer with the five outputs it reads (grasp, collision,
    # first object), the per-step shares of the moved gate and the tool path (their z_0 share is
    # computed once a plan), the contact, hold and outcome MLPs
    hidden, out_layer = model.heads[0], model.heads[-1]
    L, A = model.cfg.latent_dim, model.spec.action_dim
    macs = (_linear_macs(model.dynamics) + hidden.in_features * hidden.out_features
            + out_layer.in_features * 5 + model.moved[0].out_features * L + model.moved[-1].in_features
            + model.tool[0].out_features * (L + A) + _linear_macs(model.tool[-1])
            + _linear_macs(model.contact) + _linear_macs(model.hold) + _linear_macs(model.outcome))
    out: dict = {"device": str(device), "torch_threads": torch.get_num_threads(), "method": cfg.method,
                 "macs_per_transition": macs, "tf32": cfg.tf32, "compile": cfg.compile}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)

    def timed(p) -> list[float]:
        times = []
        for k in range(cfg.plans + 2):
            sync()
            t0 = time.perf_counter()
            p.plan()
            sync()
            if k >= 2:
                times.append(time.perf_counter() - t0)
        return times

    def planner(c, S, H, it, envs=None):
        return Planner(c, env.action_space.low, env.action_space.high,
                       PlannerConfig(method=cfg.method, samples=S, horizon=H, iterations=it,
                                     compile=cfg.compile), device, envs=envs)

    for S, H, it in settings:
        times = timed(planner(cost, S, H, it))
        tag = f"{S}x{H}x{it}"
        out[f"plan_ms_p50_{tag}"] = round(float(np.median(times)) * 1e3, 2)
        out[f"plan_ms_p95_{tag}"] = round(float(np.percentile(times, 95)) * 1e3, 2)
        if (S, H, it) == settings[0]:
            out["plan_ms_p50"], out["plan_ms_p95"] = out[f"plan_ms_p50_{tag}"], out[f"plan_ms_p95_{tag}"]
            planner_flops = 2 * macs * S * H * it / float(np.median(times))
    if cfg.batch_envs:
        E = cfg.batch_envs
        many = WorldModelCost(model)
        many.observe(stack_observations([env.reset(seed=k)[0] for k in range(E)]), cfg.task)
        times = timed(planner(many, *settings[0], envs=E))
        out["batch_envs"] = E
        out["batch_plan_ms_p50"] = round(float(np.median(times)) * 1e3, 2)
        out["batch_plan_ms_p95"] = round(float(np.percentile(times, 95)) * 1e3, 2)
        out["batch_plans_per_s"] = round(1.0 / float(np.median(times)), 1)
    matmul_flops = _matmul_flops(model.cfg.hidden_dim, device)
    if cfg.vs == "pytorch_mppi":
        peer = _pytorch_mppi_plan_s(model, cost, env, device, cfg.plans, *settings[0])  # the headline's shape
        out["pytorch_mppi_plan_ms_p50"] = round(float(np.median(peer)) * 1e3, 2)
        out["pytorch_mppi_plan_ms_p95"] = round(float(np.percentile(peer, 95)) * 1e3, 2)
        out["ratio_vs_pytorch_mppi"] = round(float(np.median(peer)) / (out["plan_ms_p50"] / 1e3), 3)
    elif cfg.vs:
        raise ValueError(f"--vs {cfg.vs}: expected pytorch_mppi")
    out["planner_gflops"] = round(planner_flops / 1e9, 2)
    out["matmul_gflops"] = round(matmul_flops / 1e9, 2)
    out["flops_fraction"] = round(planner_flops / matmul_flops, 3)
    return out
