"""Training the VLA by behaviour cloning: ``robotworld train policy``.

Usage:

    robotworld train policy --data data/vla/reach,data/vla/lift --out runs/vla [--device auto]
    robotworld train policy --data ... --out runs/vla --resume          # after a kill
    torchrun --nproc_per_node 2 -m robotworld.cli train policy --data ... --out runs/vla   # DDP

The data are datasets collected with cameras (``robotworld collect --cameras front,wrist``);
each frame's target is the chunk of the next H teacher labels (the ``label`` field a noisy
expert records: the action it meant before its noise, DART), masked past the episode's end.
The action head learns them by flow matching; an auxiliary head estimates the object and zone
positions from the cameras. Every ``holdout_every``-th episode is held out. ``OUT/checkpoint.pt``
(with optimizer and sampler state) is written atomically every ``eval_every`` steps;
TensorBoard logs go to ``OUT/tb``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robotworld import training
from robotworld.vla import checkpoint as ckpt
from robotworld.vla.configs import PolicyTrainConfig, VLAConfig
from robotworld.vla.network import VLA, VLASpec

STATE = ("proprio", "objects", "goal")
CAMERAS = ("front", "wrist")


class Demonstrations:
    """Frames and the chunks that follow them, from several camera datasets (one per task).

    Args:
        dirs: dataset directories, each collected with the cameras in ``cameras``.
        chunk: H, actions per target chunk.
        split: 'train' (all but every holdout_every-th episode), 'held-out' (those) or 'all'.
    """

    def __init__(self, dirs: list[str], chunk: int, seed: int, holdout_every: int, split: str,
                 cameras: tuple[str, ...] = CAMERAS, max_objects: int = 2, progress: bool = False,
                 paraphrase: float = 0.0) -> None:
        from robotworld.data.dataset import Dataset
        from robotworld.data.windows import WindowSampler
        from robotworld.vla.language import embed
        from robotworld.vla.phrasings import rewrites

        if not dirs:
            raise ValueError("no dataset given: pass --data DIR[,DIR...]")
        pick = {"train": lambda i: i % holdout_every != 0, "held-out": lambda i: i % holdout_every == 0,
                "all": None}[split]
        keys = STATE + tuple(f"image_{c}" for c in cameras)
        self.samplers, self.tasks = [], []
        for k, d in enumerate(dirs):
            ds = Dataset(d)
            missing = [c for c in cameras if c not in ds.manifest.get("cameras", [])]
            if missing:
                raise ValueError(f"dataset {d} has no {', '.join(missing)} camera frames: collect it with "
                                 f"--cameras {','.join(cameras)}")
            self.samplers.append(WindowSampler(ds, horizon=chunk, seed=seed + 7919 * k, obs_keys=keys,
                                               progress=progress, episodes=pick, labels=True))
            self.tasks.append(ds.task)
        s0 = self.samplers[0]
        self.image_size = int(s0.obs[keys[-1]].shape[1])
        self.action_dim = int(s0.steps["action"].shape[-1])
        for s in self.samplers:
            if s.obs[keys[-1]].shape[1] != self.image_size or s.steps["action"].shape[-1] != self.action_dim:
                raise ValueError(f"dataset {s.dataset.root} has other image or action sizes than {s0.dataset.root}")
            n = s.obs["objects"].shape[-1] // 7
            if n > max_objects:
                raise ValueError(f"dataset {s.dataset.root} has {n} objects; the VLA estimates at most {max_objects}")
        self.cameras, self.max_objects = cameras, max_objects
        if not 0 <= paraphrase <= 1:
            raise ValueError(f"paraphrase = {paraphrase}: expected a probability in [0, 1]")
        self.paraphrase = paraphrase
        self._rng = np.random.default_rng([seed, 31])
        texts = sorted({(task, t) for s, task in zip(self.samplers, self.tasks) for t in s.instructions})
        # each instruction's own embedding first, then those of its training rewrites
        self._lang = {}
        for task, t in texts:
            options = [t] + (rewrites(task, t) if paraphrase > 0 else [])
            self._lang[t] = embed(options)

    @property
    def transitions(self) -> int:
        return sum(s.transitions for s in self.samplers)

    def stats(self, rows: int = 100_000) -> tuple[list[float], list[float]]:
        """Mean and std of proprioception over a sample of each dataset's rows."""
        rng = np.random.default_rng(0)
        parts = []
        for s in self.samplers:
            n = s.obs["proprio"].shape[0]
            parts.append(s.obs["proprio"][np.sort(rng.choice(n, size=min(rows, n), replace=False))])
        x = np.concatenate(parts)
        return x.mean(0).tolist(), np.maximum(x.std(0), 1e-2).tolist()

    def _phrase(self, text: str) -> np.ndarray:
        options = self._lang[text]
        if len(options) > 1 and self._rng.random() < self.paraphrase:
            return options[1 + int(self._rng.integers(len(options) - 1))]
        return options[0]

    def sample(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """images {camera: (B, S, S, 3) uint8}, proprio (B, P), lang (B, 384), chunk (B, H, A),
        mask (B, H), objects (B, N, 3) with objects_mask (B, N), goal (B, 3); split evenly over
        the datasets, so every task counts the same."""
        per = [batch_size // len(self.samplers) + (k < batch_size % len(self.samplers))
               for k in range(len(self.samplers))]
        parts = [(s.sample(n, first_obs_only=True), s) for s, n in zip(self.samplers, per) if n]
        cat = np.concatenate
        N = self.max_objects

        def objects(o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            n = o.shape[-1] // 7
            pos = np.zeros((o.shape[0], N, 3), np.float32)
            pos[:, :n] = o[:, 0].reshape(-1, n, 7)[..., :3]
            return pos, np.broadcast_to(np.arange(N) < n, (o.shape[0], N))

        obj = [objects(w.obs["objects"]) for w, _ in parts]
        out = {
            "proprio": cat([w.obs["proprio"][:, 0] for w, _ in parts]),
            "lang": np.stack([self._phrase(s.instruction_of[int(e)]) for w, s in parts for e in w.episode]),
            "chunk": cat([w.label for w, _ in parts]),
            "mask": cat([w.mask for w, _ in parts]).astype(np.float32),
            "objects": cat([p for p, _ in obj]),
            "objects_mask": cat([m for _, m in obj]).astype(np.float32),
            "goal": cat([w.obs["goal"][:, 0] for w, _ in parts]),
        }
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}
        batch["images"] = {c: torch.from_numpy(cat([w.obs[f"image_{c}"][:, 0] for w, _ in parts])).to(device)
                           for c in self.cameras}
        return batch


def random_shift(img: torch.Tensor, pad: int) -> torch.Tensor:
    """Each frame shifted by up to ``pad`` pixels (edges replicated), as in DrQ.
    img: (B, S, S, 3) uint8 -> (B, 3, S, S) float in [-0.5, 0.5]."""
    x = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
    if pad <= 0:
        return x
    B, _, S, _ = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (B, 1, 1), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (B, 1, 1), device=x.device)
    ar = torch.arange(S, device=x.device)
    rows, cols = oy + ar[None, :, None], ox + ar[None, None, :]
    return x[torch.arange(B, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


class Objective(nn.Module):
    """Flow matching on the chunks plus the position estimate, as one module for DDP."""

    def __init__(self, model: VLA, cfg: PolicyTrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m, cfg = self.model, self.cfg
        shift = cfg.shift if self.training else 0
        images = {c: random_shift(v, shift) for c, v in batch["images"].items()}
        z = m.features(images, batch["proprio"], batch["lang"])
        a = batch["chunk"].flatten(1)  # (B, H*A)
        w = batch["mask"][..., None].expand_as(batch["chunk"]).flatten(1)
        eps = torch.randn_like(a)
        t = torch.rand(a.shape[0], device=a.device)
        xt = t[:, None] * a + (1 - t[:, None]) * eps
        v = m.velocity(xt, t, z)
        flow = (((v - (a - eps)) ** 2) * w).sum() / w.sum().clamp_min(1.0)
        objs, goal = m.estimate(z)
        om = batch["objects_mask"]
        if cfg.estimator_loss == "huber":  # in 5 cm units: quadratic below, linear above
            def err(x, y): return F.smooth_l1_loss(x / 0.05, y / 0.05, reduction="none", beta=1.0).sum(-1)
        else:
            def err(x, y): return (((x - y) / 0.05) ** 2).sum(-1)
        err_obj = err(objs, batch["objects"])  # (B, N)
        err_goal = err(goal, batch["goal"])
        estimate = (err_obj * om).sum() / om.sum().clamp_min(1.0) + err_goal.mean()
        total = flow + cfg.estimator_weight * estimate
        return total, {"flow": flow.detach(), "estimate": estimate.detach()}


@torch.no_grad()
def held_out_metrics(model: VLA, held: Demonstrations, device: torch.device, batches: int = 4,
                     batch_size: int = 128) -> dict[str, float]:
    """Held-out flow loss, the error of one sampled chunk against the teacher's (mean absolute,
    per action unit; gripper sign agreement) and the estimator's errors in cm."""
    model.eval()
    obj = Objective(model, PolicyTrainConfig(shift=0)).eval()
    g = torch.Generator(device=device).manual_seed(0)
    tot = {"flow": 0.0, "chunk_mae": 0.0, "gripper_agree": 0.0, "object_err_cm": 0.0, "goal_err_cm": 0.0}
    errs: dict[str, list[torch.Tensor]] = {"object": [], "goal": []}
    for _ in range(batches):
        b = held.sample(batch_size, device)
        _, parts = obj(b)
        z = model.features(b["images"], b["proprio"], b["lang"])
        x = model.sample(z, 1, generator=g)[:, 0]  # (B, H, A)
        m = b["mask"]
        tot["flow"] += float(parts["flow"])
        tot["chunk_mae"] += float(((x[..., :4] - b["chunk"][..., :4]).abs().mean(-1) * m).sum() / m.sum())
        tot["gripper_agree"] += float(((x[..., 4].sign() == b["chunk"][..., 4].sign()).float() * m).sum() / m.sum())
        objs, goal = model.estimate(z)
        errs["object"].append((objs[:, 0] - b["objects"][:, 0]).norm(dim=-1) * 100)
        errs["goal"].append((goal - b["goal"]).norm(dim=-1) * 100)
        tot["object_err_cm"] += float(errs["object"][-1].mean())
        tot["goal_err_cm"] += float(errs["goal"][-1].mean())
    out = {f"heldout_{k}": round(v / batches, 4) for k, v in tot.items()}
    for k, v in errs.items():  # the median: a few frames of an object in flight weigh on the mean
        out[f"heldout_{k}_err_cm_median"] = round(float(torch.cat(v).median()), 4)
    return out


def train(cfg: PolicyTrainConfig) -> dict[str, Any]:
    """Train (or resume training) the VLA. Returns the final metrics."""
    from tqdm import tqdm

    from robotworld.paths import writable_dir

    rank, world, device = training.setup(cfg.device, cfg.threads)
    for name, v in (("steps", cfg.steps), ("batch_size", cfg.batch_size), ("chunk", cfg.chunk)):
        if v < 1:
            raise ValueError(f"{name} = {v}: expected at least 1")
    if cfg.estimator_loss not in ("huber", "mse"):
        raise ValueError(f"estimator_loss = {cfg.estimator_loss!r}: expected huber or mse")
    out = writable_dir(cfg.out, "run directory")
    latest = out / "checkpoint.pt"
    body = ckpt.read(latest) if cfg.resume and latest.exists() else None
    if cfg.resume and body is None and rank == 0:
        print(f"no checkpoint at {latest}; starting a new run")
    if body is not None and body["config"]["model"]["chunk"] != cfg.chunk:
        raise ValueError(f"--resume: {latest} predicts chunks of {body['config']['model']['chunk']}, not {cfg.chunk}")
    dirs = [d.strip() for d in cfg.data.split(",") if d.strip()]
    data = Demonstrations(dirs, cfg.chunk, cfg.seed + 1000 * rank, cfg.holdout_every, "train",
                          progress=cfg.progress and rank == 0, paraphrase=cfg.paraphrase)
    held = Demonstrations(dirs, cfg.chunk, cfg.seed + 1, cfg.holdout_every, "held-out")
    torch.manual_seed(cfg.seed)
    if body is not None:
        model = ckpt.load(latest, device).train()
    elif cfg.init:
        model = ckpt.load(cfg.init, device).train()
        spec = model.spec
        if (tuple(spec.cameras), spec.image_size, spec.action_dim) != (data.cameras, data.image_size, data.action_dim):
            raise ValueError(f"--init {cfg.init}: the VLA sees {spec.cameras} at {spec.image_size} px with "
                             f"{spec.action_dim}-d actions; the data has {data.cameras} at {data.image_size} px with "
                             f"{data.action_dim}-d actions")
        if model.cfg.chunk != cfg.chunk:
            raise ValueError(f"--init {cfg.init}: it predicts chunks of {model.cfg.chunk}, not {cfg.chunk}")
    else:
        mean, std = data.stats()
        spec = VLASpec(cameras=data.cameras, image_size=data.image_size, action_dim=data.action_dim,
                       proprio_dim=len(mean), max_objects=data.max_objects, proprio_mean=mean, proprio_std=std)
        model = VLA(spec, VLAConfig(chunk=cfg.chunk)).to(device).train()
    objective = Objective(model, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if body is not None:
        opt.load_state_dict(body["optimizer"])
        step = int(body["step"])
        for s, st in zip(data.samplers, body.get("sampler_states", [])):
            s._rng.bit_generator.state = st
        if "phrase_rng" in body:
            data._rng.bit_generator.state = body["phrase_rng"]
        if "torch_rng" in body:
            torch.set_rng_state(body["torch_rng"].cpu())
    wrapped = training.data_parallel(objective, device, world)
    writer = training.tensorboard(out, rank)
    bar = tqdm(total=cfg.steps, initial=step, desc="train policy", disable=not cfg.progress or rank != 0)
    metrics: dict[str, Any] = dict(body.get("metrics", {})) if body else {}
    t0, samples = time.perf_counter(), 0
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * training.cosine(step, cfg.steps)
        loss, parts = wrapped(data.sample(cfg.batch_size, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        samples += cfg.batch_size * world
        bar.update(1)
        if writer is not None and step % 50 == 0:
            for k, v in {"loss": loss.detach(), **parts}.items():
                writer.add_scalar(f"train/{k}", float(v), step)
            bar.set_postfix(flow=f"{float(parts['flow']):.3f}", est=f"{float(parts['estimate']):.3f}")
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics = {"step": step, "train_samples_per_s": round(samples / (time.perf_counter() - t0), 1),
                       "transitions": data.transitions, **held_out_metrics(model, held, device)}
            for k, v in metrics.items():
                writer.add_scalar(f"eval/{k}", v, step)
            extra = {"train_config": asdict(cfg), "step": step, "optimizer": opt.state_dict(), "metrics": metrics,
                     "sampler_states": [s._rng.bit_generator.state for s in data.samplers],
                     "phrase_rng": data._rng.bit_generator.state,
                     "torch_rng": torch.get_rng_state()}
            ckpt.save(latest, model, extra)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            model.train()
    training.finish(bar, writer, world)
    return metrics
