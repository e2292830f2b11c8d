"""Training the world model: ``robotworld train world-model``.

Usage:

    robotworld train world-model --data data/wm/pick_place,data/wm/lift --out runs/wm [--device auto]
    robotworld train world-model --data ... --out runs/wm --resume          # after a kill
    torchrun --nproc_per_node 2 -m robotworld.cli train world-model --data ... --out runs/wm   # DDP

Every ``holdout_every``-th episode of each dataset is held out for the periodic evaluation.
``OUT/checkpoint.pt`` (latest, with optimizer state) and ``OUT/best.pt`` are written atomically
every ``checkpoint_every`` steps; TensorBoard logs go to ``OUT/tb``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robotworld import training
from robotworld.model import checkpoint as ckpt
from robotworld.model.configs import TrainConfig
from robotworld.model.world_model import PROPRIO_DIM, TASKS, TOOL, ModelSpec, WorldModel, instruction_tokens, model_config


# ---- data ----------------------------------------------------------------------------------------
class Batches:
    """Windows from several datasets, turned into the model's tensors."""

    def __init__(self, dirs: list[str], horizon: int, seed: int, holdout_every: int, split: str,
                 max_objects: int | None = None) -> None:
        """split: 'train' (all but every holdout_every-th episode), 'held-out' (those) or 'all'."""
        from robotworld.data.windows import WindowSampler

        if not dirs:
            raise ValueError("no dataset given: pass --data DIR[,DIR...]")
        pick = {"train": lambda i: i % holdout_every != 0, "held-out": lambda i: i % holdout_every == 0,
                "all": None}[split]
        self.samplers = [WindowSampler(d, horizon=horizon, seed=seed + 7919 * k, episodes=pick)
                         for k, d in enumerate(dirs)]
        self.tasks = []
        for s in self.samplers:
            t = s.dataset.task
            if t not in TASKS:
                raise ValueError(f"dataset {s.dataset.root} holds task '{t}', which the world model does not know")
            self.tasks.append(TASKS.index(t))
        n_obj = [s.obs["objects"].shape[-1] // 7 for s in self.samplers]
        self.max_objects = max_objects or max(n_obj)
        if max(n_obj) > self.max_objects:
            raise ValueError(f"a dataset has {max(n_obj)} objects; the checkpoint takes at most {self.max_objects}")
        self.action_dim = self.samplers[0].steps["action"].shape[-1]
        if any(s.steps["action"].shape[-1] != self.action_dim for s in self.samplers):
            raise ValueError("the datasets have different action sizes; train one model per action mode")

    def stats(self, rows: int = 100_000) -> tuple[list[float], list[float]]:
        """Mean and std of the flat observation over a sample of each dataset's rows."""
        parts = []
        rng = np.random.default_rng(0)
        for s in self.samplers:
            n = s.obs["proprio"].shape[0]
            idx = np.sort(rng.choice(n, size=min(rows, n), replace=False))
            parts.append(self._flat({k: v[idx] for k, v in s.obs.items()}))
        x = np.concatenate(parts)
        return x.mean(0).tolist(), np.maximum(x.std(0), 1e-2).tolist()

    def _flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        o = obs["objects"]
        pad = 7 * self.max_objects - o.shape[-1]
        if pad:
            o = np.concatenate((o, np.zeros(o.shape[:-1] + (pad,), o.dtype)), -1)
        return np.concatenate((obs["proprio"], o, obs["goal"]), -1)

    def sample(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """obs (B, H+1, D), action (B, H, A), reward / flags / mask (B, H), task (B,), instructions."""
        per = [batch_size // len(self.samplers) + (k < batch_size % len(self.samplers))
               for k in range(len(self.samplers))]
        parts = [(s.sample(n), s, t) for s, n, t in zip(self.samplers, per, self.tasks) if n]
        cat = np.concatenate
        out = {
            "obs": cat([self._flat(w.obs) for w, _, _ in parts]),
            "objects_real": cat([np.full(len(w.episode), w.obs["objects"].shape[-1] // 7) for w, _, _ in parts]),
            "action": cat([w.action for w, _, _ in parts]),
            "reward": cat([w.reward for w, _, _ in parts]),
            "success": cat([w.is_success for w, _, _ in parts]),
            "grasp": cat([w.is_grasped for w, _, _ in parts]),
            "collision": cat([w.collision for w, _, _ in parts]),
            "terminated": cat([w.terminated for w, _, _ in parts]),
            "mask": cat([w.mask for w, _, _ in parts]),
            "task": cat([np.full(len(w.episode), t) for w, _, t in parts]),
        }
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}
        for k in ("reward", "success", "grasp", "collision", "terminated", "mask"):
            batch[k] = batch[k].float()
        batch["instructions"] = [s.instruction_of[int(e)] for w, s, _ in parts for e in w.episode]
        return batch


# ---- the loss ------------------------------------------------------------------------------------
def _bce_of_log(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of labels y against probabilities given as their logs."""
    return -(y * log_p + (1 - y) * torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)))


class Objective(nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: WorldModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.q_target = copy.deepcopy(model.q).requires_grad_(False)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m, cfg = self.model, self.cfg
        obs, act, mask = batch["obs"], batch["action"], batch["mask"]
        B, H = act.shape[:2]
        P, N = m.spec.proprio_dim, m.spec.max_objects
        temb, iemb = m.task_context(batch["task"], instruction_tokens(batch["instructions"]))
        enc = m.encode_flat(obs, temb, iemb)  # (B, H+1, L)
        target = enc[:, 1:].detach()
        # the window imagined from its first observation through the one forward path, with the
        # priors imagination applies (the model's own, ``ModelConfig.priors``)
        start = m.start_of(obs[:, 0], temb, iemb, latent=enc[:, 0])
        out, raw = m._imagine(start, act.transpose(0, 1), N, m.priors, train=True)
        out = out.swapped()  # batch-first
        raw = {k: None if v is None else v.transpose(0, 1) for k, v in raw.items()}
        roll = out.latents[:, 1:]  # (B, H, L)
        w = (cfg.rho ** torch.arange(H, device=obs.device, dtype=torch.float32)) * mask  # (B, H)
        wsum = w.sum().clamp_min(1.0)
        consistency = (((roll - target) ** 2).mean(-1) * w).sum() / wsum
        heads = m._decode(raw["heads"])
        # the tool path from the observed start (smooth L1 in 2 mm units: millimetres decide a
        # table contact), and the collision logit that reads the imagined tool position
        true_tool = obs[:, :, TOOL]
        tool = out.tool_pos
        tool_loss = (F.smooth_l1_loss(tool / 0.002, true_tool[:, 1:] / 0.002, reduction="none").sum(-1) * w).sum() / wsum
        # collisions are rare per step (well under 1%): up-weight the positives
        bce = {"collision": (F.binary_cross_entropy_with_logits(
            raw["collision_logit"], batch["collision"], reduction="none", pos_weight=torch.tensor(10.0, device=obs.device))
            * w).sum() / wsum}
        # object positions in cm, on the rolled-out latents and on the encoded ones
        true_pos = obs[:, 1:, P:P + 7 * N].reshape(B, H, N, 7)[..., :3]
        real = (torch.arange(N, device=obs.device)[None] < batch["objects_real"][:, None]).float()
        enc_heads = m.read(enc, temb)
        enc_pos = enc_heads["object_pos"]  # (B, H+1, N, 3)
        pos_err = lambda p, q: ((((p - q) / 0.05) ** 2).sum(-1) * real[:, None]).sum(-1)  # noqa: E731
        # absolute positions from both latents, and the displacement since the window's start as
        # imagine reports it (start + decoded motion, with the priors), in units of 5 cm
        start_pos = obs[:, :1, P:P + 7 * N].reshape(B, 1, N, 7)[..., :3]
        did_move = ((true_pos - start_pos).norm(dim=-1) > 0.005).float()
        gate = F.binary_cross_entropy_with_logits(raw["moved_logit"], did_move, reduction="none")
        gate = ((gate * real[:, None]).sum(-1) * w).sum() / wsum
        moved = out.object_pos
        goal = obs[:, 1:, P + 7 * N:P + 7 * N + 3]
        tool_abs = (((heads["tool_pos"] - true_tool[:, 1:]) / 0.05) ** 2).sum(-1) \
            + (((enc_heads["tool_pos"][:, 1:] - true_tool[:, 1:]) / 0.05) ** 2).sum(-1) \
            + (((enc_heads["goal"][:, 1:] - goal) / 0.05) ** 2).sum(-1)
        position = ((pos_err(heads["object_pos"], true_pos) + pos_err(enc_pos[:, 1:], true_pos)
                     + 4 * pos_err(moved, true_pos) + tool_abs) * w).sum() / wsum + gate
        # grasp: the head gated by the tool-object offset, on the true and the imagined offsets
        log_grasp = [F.logsigmoid(heads["grasp"]) + F.logsigmoid(m.hold_logit(true_tool[:, 1:], true_pos[:, :, 0])),
                     raw["log_grasp"]]
        bce["grasp"] = sum((_bce_of_log(lp, batch["grasp"]) * w).sum() / wsum for lp in log_grasp)
        if raw["member_logits"] is not None:
            # each member on its own bootstrap of the windows (each window counted 0 or 2 times),
            # behind the same hold gate as the head (detached: the head's loss trains that)
            ml = raw["member_logits"]  # (B, H, K)
            boot = 2.0 * (torch.rand(B, 1, ml.shape[-1], device=obs.device) < 0.5)
            hold = F.logsigmoid(m.hold_logit(true_tool[:, 1:], true_pos[:, :, 0])).detach()
            lp = F.logsigmoid(ml) + hold[..., None]
            nll = _bce_of_log(lp, batch["grasp"][..., None])
            bce["members"] = (nll * boot * w[..., None]).sum() / (wsum * ml.shape[-1])
        # reward and success from geometry: on the true positions and grasp flag (a clean
        # function to learn), and on the imagined ones as imagine() feeds them (what it meets)
        r_true, s_true = m.outcomes(true_tool[:, 1:], true_pos[:, :, 0], goal, batch["grasp"], temb)
        reward, bce["success"] = 0.0, 0.0
        for r, s_logit in ((r_true, s_true), (out.reward, raw["success_logit"])):
            reward = reward + (((r - batch["reward"]) / m.spec.reward_scale) ** 2 * w).sum() / wsum
            bce["success"] = bce["success"] + (F.binary_cross_entropy_with_logits(
                s_logit, batch["success"], reduction="none") * w).sum() / wsum
        # Q ensemble, TD(0) on the data's own next action (the behaviour policy's value):
        # Q(z_t, a_t) -> r_t + gamma * (1 - done_t) * Q'(z*_{t+1}, a_{t+1}), z* the encoded latent
        lat = torch.cat((enc[:, :1], roll[:, :-1]), 1)[:, :H - 1].detach()
        q = m.q_values(lat, act[:, :H - 1], temb)  # (K, B, H-1)
        with torch.no_grad():
            x = torch.cat((target[:, :H - 1], act[:, 1:], temb[:, None].expand(-1, H - 1, -1)), -1)
            nxt = torch.stack([qt(x).squeeze(-1) for qt in self.q_target]).mean(0)
            td = batch["reward"][:, :H - 1] / m.spec.reward_scale + cfg.gamma * (1 - batch["terminated"][:, :H - 1]) * nxt
        valid = mask[:, :H - 1] * mask[:, 1:]
        q_loss = (((q - td) ** 2) * valid).sum() / (valid.sum().clamp_min(1.0) * len(m.q))
        total = 20 * consistency + reward + sum(bce.values()) + position + 0.1 * tool_loss + 0.1 * q_loss
        parts = {"consistency": consistency, "reward": reward, "position": position, "tool": tool_loss, "q": q_loss,
                 **{f"bce_{k}": v for k, v in bce.items()}}
        return total, {k: v.detach() for k, v in parts.items()}

    @torch.no_grad()
    def update_target(self) -> None:
        for p, pt in zip(self.model.q.parameters(), self.q_target.parameters()):
            pt.lerp_(p, self.cfg.tau)


# ---- the run -------------------------------------------------------------------------------------
def train(cfg: TrainConfig, evaluate_fn=None) -> dict[str, Any]:
    """Train (or resume training) a world model. Returns the final metrics."""
    from tqdm import tqdm

    rank, world, device = training.setup(cfg.device, cfg.threads)
    for name, v in (("steps", cfg.steps), ("batch_size", cfg.batch_size), ("horizon", cfg.horizon)):
        if v < (2 if name == "horizon" else 1):
            raise ValueError(f"{name} = {v}: expected at least {2 if name == 'horizon' else 1}")
    from robotworld.paths import writable_dir

    out = writable_dir(cfg.out, "run directory")
    latest = out / "checkpoint.pt"
    resume_body = ckpt.read(latest) if cfg.resume and latest.exists() else None
    if cfg.resume and resume_body is None and rank == 0:
        print(f"no checkpoint at {latest}; starting a new run")
    dirs = [d.strip() for d in cfg.data.split(",") if d.strip()]
    init = None
    if cfg.init and not resume_body:
        init = ckpt.load(ckpt.resolve(cfg.init), device)
        members = init.cfg.ensemble if cfg.ensemble < 0 else cfg.ensemble
        new_cfg = replace(init.cfg, priors=cfg.priors, ensemble=members)  # this run's loss and members
        if members != init.cfg.ensemble:  # new members start from scratch; the rest as trained
            fresh = WorldModel(init.spec, new_cfg).to(device)
            kept = {k: v for k, v in init.state_dict().items() if not k.startswith("members.")}
            missing, _ = fresh.load_state_dict(kept, strict=False)
            assert all(k.startswith("members.") for k in missing), missing
            init = fresh
        init.cfg = new_cfg
    spec_in = (resume_body["config"]["spec"] if resume_body else
               asdict(init.spec) if init is not None else None)
    data = Batches(dirs, cfg.horizon, cfg.seed + 1000 * rank, cfg.holdout_every, "train",
                   spec_in["max_objects"] if spec_in else None)
    held = Batches(dirs, cfg.horizon, cfg.seed + 1, cfg.holdout_every, "held-out", data.max_objects)
    torch.manual_seed(cfg.seed)
    if resume_body:
        model = ckpt.load(latest, device).train()
    elif init is not None:
        model = init.train()
        if data.action_dim != model.spec.action_dim:
            raise ValueError(f"--init {cfg.init}: the model takes {model.spec.action_dim}-d actions, the data has "
                             f"{data.action_dim}")
    else:
        mean, std = data.stats()
        spec = ModelSpec(proprio_dim=PROPRIO_DIM, max_objects=data.max_objects, action_dim=data.action_dim,
                         obs_mean=mean, obs_std=std)
        model = WorldModel(spec, model_config(cfg.preset, priors=cfg.priors, ensemble=max(cfg.ensemble, 0))).to(device)
    objective = Objective(model, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if resume_body:
        opt.load_state_dict(resume_body["optimizer"])
        objective.q_target.load_state_dict(resume_body["q_target"])
        step = int(resume_body["step"])
        for s, st in zip(data.samplers, resume_body.get("sampler_states", [])):
            s._rng.bit_generator.state = st
    wrapped = training.data_parallel(objective, device, world)
    writer = training.tensorboard(out, rank)
    bar = tqdm(total=cfg.steps, initial=step, desc="train world-model", disable=not cfg.progress or rank != 0)
    metrics: dict[str, Any] = dict(resume_body.get("metrics", {})) if resume_body else {}
    t0, samples = time.perf_counter(), 0
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * training.cosine(step, cfg.steps)
        batch = data.sample(cfg.batch_size, device)
        loss, parts = wrapped(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        opt.step()
        objective.update_target()
        step += 1
        samples += cfg.batch_size * world
        bar.update(1)
        if writer is not None and step % 50 == 0:
            writer.add_scalar("train/loss", float(loss.detach()), step)
            for k, v in parts.items():
                writer.add_scalar(f"train/{k}", float(v), step)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", cons=f"{float(parts['consistency']):.4f}")
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics = {"step": step, "train_samples_per_s": round(samples / (time.perf_counter() - t0), 1),
                       **_held_out_losses(objective, held, device)}
            if evaluate_fn is not None:
                metrics.update(evaluate_fn(model))
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    writer.add_scalar(f"eval/{k}", v, step)
            extra = {"train_config": asdict(cfg), "step": step, "optimizer": opt.state_dict(),
                     "q_target": objective.q_target.state_dict(), "metrics": metrics,
                     "sampler_states": [s._rng.bit_generator.state for s in data.samplers]}
            ckpt.save(latest, model, extra)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            model.train()
    training.finish(bar, writer, world)
    return metrics


@torch.no_grad()
def _held_out_losses(objective: Objective, held: Batches, device: torch.device, batches: int = 8) -> dict[str, float]:
    objective.eval()
    totals: dict[str, float] = {}
    for _ in range(batches):
        _, parts = objective(held.sample(256, device))
        for k, v in parts.items():
            totals[f"heldout_{k}"] = totals.get(f"heldout_{k}", 0.0) + float(v) / batches
    objective.train()
    return {k: round(v, 5) for k, v in totals.items()}
