"""How good the imagination is: ``robotworld eval world-model``.

Usage:

    robotworld eval world-model --checkpoint default --data data/wm/pick_place --json
    robotworld eval world-model --checkpoint runs/wm/checkpoint.pt --data DIR1,DIR2 --episodes all

On episodes the model never saw (by default the held-out split of the training run, every
``holdout_every``-th episode; ``--episodes all`` for a separately collected dataset), random
windows are encoded at their first observation and rolled forward open loop on the recorded
actions. Reported: object-position error at horizons 1, 5, 10 and 20 against the constant-
position baseline (median over windows, cm), grasp AUROC and expected calibration error at the
end of an 8-step chunk, collision AUROC per step, success AUROC, reward error, and the
imagined tool position's error (median, cm) at the same horizons. A plot of
error against horizon and a reliability diagram are written beside the JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotworld.model.configs import WorldModelEvalConfig

HORIZONS = (1, 5, 10, 20)
CHUNK = 8


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); nan when one class is missing."""
    label = label.astype(bool)
    pos, neg = int(label.sum()), int((~label).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def ece(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error over equal-width bins, and (mean prob, frequency, count) per bin."""
    idx = np.minimum((prob * bins).astype(int), bins - 1)
    total, table = 0.0, []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        if n:
            p, f = float(prob[sel].mean()), float(label[sel].mean())
            total += n * abs(p - f)
            table.append((p, f, n))
    return total / max(len(prob), 1), table


@torch.no_grad()
def evaluate_world_model(cfg: WorldModelEvalConfig, model=None) -> dict[str, Any]:
    """Metrics of a world model on held-out windows (see the module docstring)."""
    from robotworld.device import pick_device
    from robotworld.model import checkpoint as ckpt
    from robotworld.model import priors as priors_mod
    from robotworld.model.world_model import TOOL, instruction_tokens

    if cfg.episodes not in ("held-out", "all"):
        raise ValueError(f"episodes = '{cfg.episodes}': expected held-out or all")
    from robotworld.paths import writable_dir

    device = pick_device(cfg.device)
    priors = None if cfg.priors.strip().lower() == "model" else priors_mod.parse(cfg.priors)  # None: the model's own
    if cfg.windows < 1:
        raise ValueError(f"windows = {cfg.windows}: expected at least 1")
    out_dir = writable_dir(cfg.out, "output directory")
    holdout_every = 10
    if model is None:
        body = ckpt.read(cfg.checkpoint)
        holdout_every = int(body.get("train_config", {}).get("holdout_every", 10))
        model = ckpt.load(cfg.checkpoint, device)
    model.eval()
    dirs = [d.strip() for d in cfg.data.split(",") if d.strip()]
    from robotworld.model.train import Batches

    batches = Batches(dirs, max(HORIZONS), cfg.seed, holdout_every, cfg.episodes, model.spec.max_objects)
    n_total = cfg.windows * len(dirs)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("err", "base", "valid", "gp", "gy", "gv", "cp", "cy",
                                                         "sp", "sy", "rp", "ry", "tool", "doubt")}
    for start in range(0, n_total, 512):
        b = batches.sample(min(512, n_total - start), device)
        m = model
        temb, iemb = m.task_context(b["task"], instruction_tokens(b["instructions"]))
        P = m.spec.proprio_dim
        n = m.spec.max_objects
        true = b["obs"][:, :, P:P + 7 * n].reshape(*b["obs"].shape[:2], n, 7)[..., :3]  # (B, H+1, n, 3)
        tool = b["obs"][:, :, TOOL]  # (B, H+1, 3)
        # imagined as a planner imagines: from the observed start, every prior on
        out = m.imagine(m.start_of(b["obs"][:, 0], temb, iemb), b["action"], priors=priors)
        rows["tool"].append(((out.tool_pos - tool[:, 1:]).norm(dim=-1) * 100).cpu().numpy())
        real = (torch.arange(n, device=device)[None] < b["objects_real"][:, None]).float()  # (B, n)
        dist = lambda p, q: ((p - q).norm(dim=-1) * real[:, None]).sum(-1) / real.sum(-1)[:, None] * 100  # noqa: E731
        rows["err"].append(dist(out.object_pos, true[:, 1:]).cpu().numpy())
        rows["base"].append(dist(true[:, :1].expand_as(true[:, 1:]), true[:, 1:]).cpu().numpy())
        rows["valid"].append(b["mask"].cpu().numpy().astype(bool))
        mask = b["mask"][:, :CHUNK].cpu().numpy().astype(bool)
        rows["gp"].append(out.grasp[:, CHUNK - 1].cpu().numpy())
        rows["gy"].append(b["grasp"][:, CHUNK - 1].cpu().numpy())
        rows["gv"].append(mask.all(1))
        if m.cfg.ensemble:
            rows["doubt"].append(out.doubt[:, CHUNK - 1].cpu().numpy())
        rows["cp"].append(out.collision[:, :CHUNK].cpu().numpy()[mask])
        rows["cy"].append(b["collision"][:, :CHUNK].cpu().numpy()[mask])
        rows["sp"].append(out.success[:, :CHUNK].cpu().numpy()[mask])
        rows["sy"].append(b["success"][:, :CHUNK].cpu().numpy()[mask])
        rows["rp"].append(out.reward[:, :CHUNK].cpu().numpy()[mask])
        rows["ry"].append(b["reward"][:, :CHUNK].cpu().numpy()[mask])
    cat = {k: np.concatenate(v) for k, v in rows.items() if v}
    valid = np.cumprod(cat["valid"], axis=1).astype(bool)  # the episode lasts at least h steps
    res: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "data": dirs, "episodes": cfg.episodes, "priors": cfg.priors,
                           "windows": int(len(cat["err"]))}
    curve = []
    for h in range(1, max(HORIZONS) + 1):
        v = valid[:, h - 1]
        curve.append((h, float(np.median(cat["err"][v, h - 1])) if v.any() else float("nan"),
                      float(np.median(cat["base"][v, h - 1])) if v.any() else float("nan"), int(v.sum())))
    for h, e, base, n in curve:
        if h in HORIZONS:
            res[f"pos_err_cm_h{h}"] = round(e, 3)
            res[f"baseline_pos_err_cm_h{h}"] = round(base, 3)
            res[f"windows_h{h}"] = n
            # most objects rest most of the time, where the baseline is exact: the same figures
            # over the windows whose objects moved more than 1 cm show what the model adds
            v = valid[:, h - 1]
            moving = v & (cat["base"][:, h - 1] > 1.0)
            if moving.any():
                res[f"pos_err_cm_h{h}_moving"] = round(float(np.median(cat["err"][moving, h - 1])), 3)
                res[f"baseline_pos_err_cm_h{h}_moving"] = round(float(np.median(cat["base"][moving, h - 1])), 3)
                res[f"windows_h{h}_moving"] = int(moving.sum())
            res[f"pos_err_cm_h{h}_mean"] = round(float(cat["err"][v, h - 1].mean()), 3)
            res[f"tool_err_cm_h{h}"] = round(float(np.median(cat["tool"][v, h - 1])), 3)
            res[f"baseline_pos_err_cm_h{h}_mean"] = round(float(cat["base"][v, h - 1].mean()), 3)
    gv = cat["gv"]
    res["grasp_auroc"] = round(auroc(cat["gp"][gv], cat["gy"][gv]), 4)
    res["grasp_ece"], table = ece(cat["gp"][gv], cat["gy"][gv])
    res["grasp_ece"] = round(res["grasp_ece"], 4)
    res["grasp_positive_rate"] = round(float(cat["gy"][gv].mean()), 4)
    if "doubt" in cat:  # does the ensemble's spread flag the grasp predictions that are wrong?
        wrong = np.abs(cat["gp"][gv] - cat["gy"][gv]) > 0.5
        res["grasp_wrong_rate"] = round(float(wrong.mean()), 4)
        res["doubt_auroc"] = round(auroc(cat["doubt"][gv], wrong.astype(np.float32)), 4) if wrong.any() else float("nan")
    res["collision_auroc"] = round(auroc(cat["cp"], cat["cy"]), 4)
    res["collision_positive_rate"] = round(float(cat["cy"].mean()), 4)
    res["success_auroc"] = round(auroc(cat["sp"], cat["sy"]), 4)
    res["reward_mae"] = round(float(np.abs(cat["rp"] - cat["ry"]).mean()), 4)
    _plots(out_dir, curve, table)
    res["plots"] = [str(out_dir / "pos_err_vs_horizon.png"), str(out_dir / "grasp_reliability.png")]
    return res


def _plots(out: Path, curve: list, table: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    h = [c[0] for c in curve]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(h, [c[1] for c in curve], "o-", label="world model (open loop)")
    ax.plot(h, [c[2] for c in curve], "s--", label="constant position")
    ax.set_xlabel("horizon (steps of 50 ms)")
    ax.set_ylabel("object position error, median (cm)")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out / "pos_err_vs_horizon.png")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.plot([t[0] for t in table], [t[1] for t in table], "o-", label="grasp after 8 steps")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend()
    _save(fig, out / "grasp_reliability.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(res: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, path)
