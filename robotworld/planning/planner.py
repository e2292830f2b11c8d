"""Sampling-based MPC: MPPI and CEM over any batched cost, such as the world model's ``imagine``.

Tensors are shaped ``(horizon, samples, action_dim)`` as in TD-MPC2. One ``plan`` call runs
``iterations`` rounds of: sample around the current mean with time-correlated noise (plus the
policy's proposals and the mean itself), score every sequence in one batched call, keep the
elites, and refit the mean and spread (MPPI: exponentially weighted by cost; CEM: uniform over
the elites). The mean is warm-started from the previous call's solution shifted by one step.
Actions always stay inside the bounds; a sample whose cost is not finite is dropped and counted,
never chosen. A planner made with ``envs=E`` plans for E environments at once, tensors
``(horizon, E, samples, action_dim)``, in one cost call per iteration. Nothing in an iteration
waits for the device, so with ``compile`` a whole plan is one CUDA graph on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

CostFn = Callable[[torch.Tensor], torch.Tensor]  # (H, S, A) action sequences -> (S,) costs


@dataclass
class PlannerConfig:
    """Sampling-based MPC settings."""

    method: str = "mppi"
    """mppi (cost-weighted refit) or cem (uniform refit over the elites)."""
    horizon: int = 16
    """H, steps planned ahead."""
    samples: int = 1024
    """S, action sequences scored per iteration."""
    iterations: int = 6
    """Refinement rounds per plan."""
    elites: int = 0
    """Best sequences the distribution is refit to (0: 64, or every sample when there are fewer)."""
    temperature: float = 0.5
    """MPPI temperature, in units of the elites' cost spread."""
    init_std: float = 0.5
    """Spread of the sampling noise at the start of each plan."""
    min_std: float = 0.05
    """Lower bound of the spread, so the search never collapses to a point."""
    smoothing: float = 0.5
    """Correlation of the noise between consecutive steps (0: white, towards 1: smooth)."""
    action_rate: float = 0.001
    """Weight of the action-rate penalty, sum over steps of |a_t - a_(t-1)|^2. Keep it well below
    the imagined reward's scale (about 0.01-0.1 a step): at 0.05 it swamped the reward and the
    plan collapsed to standing still."""
    seed: int = 0
    """Seed of the sampling noise."""
    switch_dim: int = -1
    """An action dimension with a binary meaning, such as a gripper's open / close command (-1:
    none). Each iteration also scores the mean with that dimension held at its low bound, and
    at its high bound, over the whole horizon: smooth noise around a mean that keeps the gripper
    closed rarely reaches across to open it, and a plan that never opens cannot grasp again."""
    switch_to: str = "both"
    """Which held proposals ``switch_dim`` adds: both (its low and its high bound), low or high.
    MPC on lift holds the gripper open only ('high'): with both, the closed proposal was taken
    before the tool was over the object (docs/experiments.md)."""
    switch_snap: bool = False
    """Return ``switch_dim`` at a bound, not the mean: its high bound where the refined mean is
    at or above ``switch_threshold``, its low bound below. The search keeps the continuous mean
    (the next plan's warm start); what a caller executes is the switch thrown one way. A mean
    is a weighted average of elites that disagree on when to close a gripper, and executed as it
    is, it half-closes the fingers a step early (MPC on lift and clutter)."""
    switch_threshold: float = 0.0
    """Where ``switch_snap`` throws the switch, in action units."""
    compile: bool = False
    """Compile every iteration of a plan as one function (torch.compile, whole graph; on a GPU
    one CUDA graph a plan): about a minute before the first plan, faster ones after. Needs a
    C++ compiler on CPU."""

    def __post_init__(self) -> None:
        if self.elites == 0:
            self.elites = min(64, self.samples)
        if self.method not in ("mppi", "cem"):
            raise ValueError(f"method = '{self.method}': expected mppi or cem")
        if self.switch_to not in ("both", "low", "high"):
            raise ValueError(f"switch_to = '{self.switch_to}': expected both, low or high")
        if self.switch_dim < -1:
            raise ValueError(f"switch_dim = {self.switch_dim}: expected an action dimension, or -1 for none")
        if self.switch_snap and self.switch_dim < 0:
            raise ValueError("switch_snap = True needs a switch_dim (an action dimension to snap)")
        for name in ("horizon", "samples", "iterations", "elites"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: expected at least 1")
        if self.elites > self.samples:
            raise ValueError(f"elites = {self.elites} is more than samples = {self.samples}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing = {self.smoothing}: expected 0 <= smoothing < 1")
        if self.temperature <= 0 or self.init_std <= 0 or self.min_std <= 0:
            raise ValueError("temperature, init_std and min_std must be positive")


# Search sizes by name. "full" is PlannerConfig's default: 1,024 samples x horizon 16 x 6
# iterations, about 98k imagined steps a plan, at control rate on a GPU (4.3 ms on one H200,
# compiled) and 0.4-0.6 s on two CPU cores. "fast" plans at control rate on two CPU cores
# (p95 37-48 ms eager, 21 ms compiled) and succeeds as often closed loop on reach, lift and
# clutter (docs/experiments.md, Planner, "The fast preset" and "The shipped code, fifth session").
PLANNER_PRESETS: dict[str, dict[str, int]] = {
    "full": {"samples": 1024, "horizon": 16, "iterations": 6},
    "fast": {"samples": 128, "horizon": 8, "iterations": 3},
}


def planner_config(preset: str = "full", **overrides) -> PlannerConfig:
    """A PlannerConfig from a preset's search sizes (``PLANNER_PRESETS``) plus field overrides."""
    if preset not in PLANNER_PRESETS:
        raise ValueError(f"planner preset '{preset}': expected one of {', '.join(PLANNER_PRESETS)}")
    return PlannerConfig(**{**PLANNER_PRESETS[preset], **overrides})


def fit_horizon(chunks: torch.Tensor, H: int) -> torch.Tensor:
    """Chunks (..., T, A) as (..., H, A): cut after H steps, or their last action held up to H
    (a policy's chunk that ends early is read as holding still at its last command)."""
    T = chunks.shape[-2]
    if T >= H:
        return chunks[..., :H, :]
    return torch.cat((chunks, chunks[..., -1:, :].expand(*chunks.shape[:-2], H - T, chunks.shape[-1])), -2)


class Planner:
    """MPPI / CEM over a batched cost function, for one environment or a batch of them.

    Args:
        cost: maps action sequences (H, S, A) to costs (S,); lower is better. With ``envs`` set,
            it gets (H, E * S, A), environment e's samples in columns e * S .. (e + 1) * S - 1,
            and returns (E * S,) in that order (``WorldModelCost`` does, after it observes a
            batch of E observations).
        low, high: (A,) action bounds.
        cfg: PlannerConfig.
        device: where the sampling runs (the cost function's device).
        envs: plan for this many environments at once, each with its own mean, spread, elites
            and warm start, in one cost call per iteration; ``plan`` then returns (E, H, A).
            None (the default): one environment, and ``plan`` returns (H, A).
    """

    def __init__(self, cost: CostFn, low, high, cfg: PlannerConfig, device: torch.device | str = "cpu",
                 envs: int | None = None) -> None:
        self.cost, self.cfg, self.device = cost, cfg, torch.device(device)
        if envs is not None and envs < 1:
            raise ValueError(f"envs = {envs}: expected at least 1 (or None for one environment)")
        self.envs = envs
        self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        if self.low.shape != self.high.shape or self.low.dim() != 1 or (self.low >= self.high).any():
            raise ValueError("action bounds must be (A,) vectors with low < high")
        self.action_dim = self.low.shape[0]
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        b, H = cfg.smoothing, cfg.horizon
        # AR(1) noise as one product: eps_t = sum_j b^(t-j) c_j e_j, c_0 = 1, c_j = sqrt(1 - b^2)
        t = torch.arange(H, dtype=torch.float64)
        mix = torch.tril(b ** (t[:, None] - t[None]).clamp(min=0))
        mix[:, 1:] *= (1 - b * b) ** 0.5
        self._mix = mix.float().to(self.device)
        self._refine = self._refinement
        if cfg.compile:  # every iteration of a plan compiled as one (one CUDA graph on a GPU)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._refine = torch.compile(self._refinement, mode=mode, fullgraph=True, dynamic=False)
        self.reset()

    @property
    def _E(self) -> int:
        return self.envs or 1

    def reset(self, seed: int | None = None) -> None:
        """Forget the previous solution (call at the start of an episode); with a seed, the
        sampling noise also restarts from it."""
        if seed is not None:
            self.gen.manual_seed(seed)
        H, A = self.cfg.horizon, self.action_dim
        self._mean = ((self.low + self.high) / 2).expand(H, self._E, A).clone()  # (H, E, A)
        self._last = self._mean[0].clone()  # (E, A)
        self._dropped = torch.zeros((), dtype=torch.long, device=self.device)
        self._plans = 0

    @property
    def stats(self) -> dict[str, int]:
        """Samples dropped for a non-finite cost, and plans made, since the last reset."""
        return {"dropped_samples": int(self._dropped), "plans": self._plans}

    def reset_env(self, e: int) -> None:
        """Forget environment e's previous solution (one of a batch starts a new episode)."""
        self._mean[:, e] = (self.low + self.high) / 2
        self._last[e] = self._mean[0, e]

    def _as_given(self, x: torch.Tensor) -> torch.Tensor:
        """A time-major (H, E, A) sequence as callers get it: (H, A), or (E, H, A) with ``envs``."""
        return x[:, 0] if self.envs is None else x.transpose(0, 1)

    @property
    def mean(self) -> torch.Tensor:
        """The last solution: (H, A), or (E, H, A) with ``envs`` set."""
        return self._as_given(self._mean)

    @property
    def last_action(self) -> torch.Tensor:
        """The first action of the last solution: (A,), or (E, A) with ``envs`` set."""
        return self._last[0] if self.envs is None else self._last

    def warm_start(self) -> torch.Tensor:
        """The previous solution shifted by one step (its last step repeated): (H, A), or
        (E, H, A) with ``envs`` set."""
        shifted = torch.cat((self._mean[1:], self._mean[-1:]), 0)
        return self._as_given(shifted)

    def _noise(self, S: int) -> torch.Tensor:
        """(iterations, H, E, S, A) standard normal noise, AR(1)-correlated along the horizon:
        one draw for the whole plan."""
        I, H, A = self.cfg.iterations, self.cfg.horizon, self.action_dim
        eps = torch.randn(I, H, self._E * S * A, generator=self.gen, device=self.device)
        return torch.matmul(self._mix, eps).view(I, H, self._E, S, A)

    @torch.no_grad()
    def plan(self, prior_chunks: torch.Tensor | None = None) -> torch.Tensor:
        """Optimise the action sequence; returns (H, A) inside the bounds ((E, H, A) with ``envs``).

        prior_chunks: (K, T, A) proposals (e.g. from a policy) scored alongside the samples; with
            ``envs`` set, (E, K, T, A), each environment's own. Any length T: cut to the
            horizon, or held at their last action up to it (``fit_horizon``).
        """
        cfg, H, A, E = self.cfg, self.cfg.horizon, self.action_dim, self._E
        mean = torch.cat((self._mean[1:], self._mean[-1:]), 0)  # warm start, (H, E, A)
        std = torch.full((H, E, A), cfg.init_std, device=self.device)
        priors = None
        if prior_chunks is not None:
            p = torch.as_tensor(prior_chunks, dtype=torch.float32, device=self.device)
            if self.envs is None:
                if p.dim() != 3 or p.shape[-1] != A or p.shape[1] < 1:
                    raise ValueError(f"prior_chunks have shape {tuple(p.shape)}; expected (K, T, {A}), any T >= 1")
                p = p[None]
            elif p.dim() != 4 or p.shape[0] != E or p.shape[-1] != A or p.shape[2] < 1:
                raise ValueError(f"prior_chunks have shape {tuple(p.shape)}; expected ({E}, K, T, {A}), any T >= 1")
            priors = fit_horizon(p, H).permute(2, 0, 1, 3)  # (H, E, K, A)
        if cfg.switch_dim >= A:
            raise ValueError(f"switch_dim = {cfg.switch_dim}, but actions have {A} dimensions")
        fixed = 1 + len(self._switch_bounds()) + (0 if priors is None else priors.shape[2])
        noise = self._noise(max(cfg.samples - fixed, 0))
        if cfg.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the last plan's graph outputs are spent
        mean, dropped, starved = self._refine(mean, std, noise, priors, self._last)
        if bool(starved):  # the plan's one wait for the device
            raise FloatingPointError("every sampled sequence got a non-finite cost from the model")
        self._dropped += dropped
        self._mean = torch.minimum(torch.maximum(mean, self.low), self.high)
        plan = self._mean.clone()  # (H, E, A)
        if cfg.switch_snap:  # the switch thrown one way; the search keeps the mean
            d = cfg.switch_dim
            plan[..., d] = torch.where(plan[..., d] >= cfg.switch_threshold, self.high[d], self.low[d])
        self._last = plan[0].clone()  # what is executed, for the action-rate penalty
        self._plans += 1
        return self._as_given(plan)

    def _refinement(self, mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, priors: torch.Tensor | None,
                    last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every iteration of a plan: the refined mean (H, E, A), the number of non-finite costs,
        and whether some environment had no finite one in some iteration. No value leaves the
        device, so it runs whole in one CUDA graph."""
        dropped = torch.zeros((), dtype=torch.long, device=mean.device)
        starved = torch.zeros((), dtype=torch.bool, device=mean.device)
        for i in range(self.cfg.iterations):
            mean, std, bad, none_ok = self._iteration(mean, std, noise[i], priors, last)
            dropped, starved = dropped + bad, starved | none_ok
        return mean, dropped, starved

    def _iteration(self, mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, priors: torch.Tensor | None,
                   last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One refinement: sample around mean (H, E, A) with noise (H, E, S', A), score the
        mean, the priors and the samples in one cost call, refit to the elites. Returns the new
        mean and spread, the number of non-finite costs, and whether some environment had no
        finite one. No value leaves the device, so it runs whole in one CUDA graph."""
        cfg = self.cfg
        H, E, A = mean.shape
        x = mean[:, :, None] + std[:, :, None] * noise
        parts = [mean[:, :, None]]
        for bound in self._switch_bounds():  # the mean with the switch held at a bound
            held = mean.clone()
            held[..., cfg.switch_dim] = bound
            parts.append(held[:, :, None])
        x = torch.cat(parts + ([] if priors is None else [priors]) + [x], 2)
        x = torch.minimum(torch.maximum(x, self.low), self.high)  # (H, E, S, A)
        S = x.shape[2]
        c = (self.cost(x.view(H, E * S, A)) + cfg.action_rate * self._rate(x, last).view(E * S)).view(E, S)
        ok = torch.isfinite(c)
        c = torch.where(ok, c, torch.full_like(c, float("inf")))
        k = cfg.elites
        ec, idx = torch.topk(c, k, dim=1, largest=False)  # (E, k), best first
        elite = torch.gather(x, 2, idx[None, :, :, None].expand(H, E, k, A))  # (H, E, k, A)
        fin = torch.isfinite(ec)
        n = fin.sum(1, keepdim=True).clamp(min=1)
        if cfg.method == "mppi" and k > 1:
            # weighted by cost, in units of the finite elites' spread; a non-finite one weighs 0
            mu = torch.where(fin, ec, 0.0).sum(1, keepdim=True) / n
            spread = ((torch.where(fin, ec - mu, 0.0) ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
            w = torch.softmax(-(ec - ec[:, :1]) / (cfg.temperature * (spread + 1e-6)), 1)
        else:
            w = fin.float() / n
        w = w[None, :, :, None]
        mean = (w * elite).sum(2)
        std = ((w * (elite - mean[:, :, None]) ** 2).sum(2)).sqrt().clamp(cfg.min_std, cfg.init_std)
        return mean, std, (~ok).sum(), (~ok.any(1)).any()

    def _switch_bounds(self) -> list[torch.Tensor]:
        d, to = self.cfg.switch_dim, self.cfg.switch_to
        if d < 0:
            return []
        return [b for b, name in ((self.low[d], "low"), (self.high[d], "high")) if to in (name, "both")]

    def _rate(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Action-rate penalty per sequence. x: (H, E, S, A), last: (E, A) -> (E, S)"""
        prev = torch.cat((last[None, :, None].expand(1, -1, x.shape[2], -1), x[:-1]), 0)
        return ((x - prev) ** 2).sum((0, 3))
