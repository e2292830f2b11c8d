"""The data engine: collection throughput, memory over a long run, window sampling."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from robotworld.bench.env import _vector


@dataclass
class DataBenchConfig:
    """Data-engine figures: collection throughput, memory over a long run, window sampling."""

    task: str = "pick_place"
    """Task to collect."""
    policy: str = "random"
    """Behaviour policy (random matches the random actions of ``bench env``)."""
    episodes: int = 200
    """Episodes for each state-only throughput figure."""
    camera_episodes: int = 20
    """Episodes for each figure with both 96x96 cameras on."""
    memory_episodes: int = 2000
    """Episodes of the run whose resident memory is tracked."""
    window_transitions: int = 1_000_000
    """Transitions in the dataset that windows are sampled from (the memory run, extended)."""
    horizon: int = 16
    """Steps per sampled window."""
    batch_size: int = 256
    """Windows per sampled batch."""
    out: str = "runs/bench_data"
    """Scratch directory for the datasets (reused: the long collection resumes)."""
    seed: int = 0
    """Seed of the collections and the sampler."""


def _tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants, from /proc."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            status = open(f"/proc/{d}/status").read()
        except OSError:
            continue
        parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(d)] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    keep, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in keep]
        keep.update(kids)
        frontier.extend(kids)
    return sum(rss.get(p, 0) for p in keep) / 1024


def _collect_rate(out: str, task: str, policy: str, episodes: int, workers: int, cameras: str,
                  seed: int) -> float:
    import shutil

    from policies import factory
    from robotworld.data import CollectConfig, collect

    shutil.rmtree(out, ignore_errors=True)
    r = collect(CollectConfig(task=task, policy=policy, episodes=episodes, workers=workers, out=out,
                              cameras=cameras, seed=seed, progress=False), factory(policy))
    shutil.rmtree(out, ignore_errors=True)
    return r.transitions_per_s


def bench_data(cfg: DataBenchConfig) -> dict:
    """Collection throughput (1 and 2 workers, with and without cameras), memory, window sampling."""

    from policies import factory
    from robotworld.data import CollectConfig, collect
    from robotworld.data.windows import WindowSampler
    from robotworld.paths import writable_dir

    root = writable_dir(cfg.out, "bench data directory")
    out: dict = {"task": cfg.task, "policy": cfg.policy,
                 "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for cams, n, tag in (("", cfg.episodes, "state"), ("front,wrist", cfg.camera_episodes, "cameras")):
        for w in (1, 2):
            out[f"collect_{tag}_{w}w_transitions_per_s"] = round(
                _collect_rate(str(root / f"rate_{tag}_{w}"), cfg.task, cfg.policy, n, w, cams, cfg.seed), 1)
        out[f"collect_{tag}_speedup_2w"] = round(out[f"collect_{tag}_2w_transitions_per_s"]
                                                 / out[f"collect_{tag}_1w_transitions_per_s"], 3)
    out["batched_env_steps_per_s"] = round(_vector("threaded", cfg.task, 16, 200, cfg.seed), 1)
    out["collect_vs_batched_env"] = round(out["collect_state_2w_transitions_per_s"]
                                          / out["batched_env_steps_per_s"], 3)
    # memory over a long run: resident memory of the driver and its workers every 100 episodes
    samples: list[tuple[int, float]] = []
    done = [0]

    def on_episode(_: int) -> None:
        done[0] += 1
        if done[0] % 100 == 0:
            samples.append((done[0], _tree_rss_mb(os.getpid())))

    big = str(root / "long")
    mem = collect(CollectConfig(task=cfg.task, policy=cfg.policy, episodes=cfg.memory_episodes, workers=2,
                                out=big, seed=cfg.seed, progress=False), factory(cfg.policy), on_episode=on_episode)
    if len(samples) >= 4:
        x = np.array([s[0] for s in samples[2:]], float)
        y = np.array([s[1] for s in samples[2:]], float)
        out["memory_episodes"] = cfg.memory_episodes
        out["rss_mb_after_300_episodes"] = round(float(y[0]), 1)
        out["rss_mb_at_end"] = round(float(y[-1]), 1)
        out["rss_mb_max"] = round(float(y.max()), 1)
        out["rss_growth_mb_per_1000_episodes"] = round(float(np.polyfit(x, y, 1)[0] * 1000), 2)
    out["memory_run_collected"] = mem.collected
    # window sampling from a dataset of window_transitions transitions (the long run, extended)
    from robotworld.data import Dataset

    per_ep = max(1, Dataset(big).info()["mean_episode_steps"])
    need = int(np.ceil(cfg.window_transitions / per_ep))
    collect(CollectConfig(task=cfg.task, policy=cfg.policy, episodes=max(need, cfg.memory_episodes), workers=2,
                          out=big, seed=cfg.seed, progress=True), factory(cfg.policy))
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sampler = WindowSampler(big, horizon=cfg.horizon, seed=cfg.seed, progress=True)
    out["window_cache_build_s"] = round(time.perf_counter() - t0, 2)
    out["window_dataset_transitions"] = sampler.transitions
    for _ in range(20):  # page the memory map in, as a training run's first batches do
        sampler.sample(cfg.batch_size).to_torch()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        sampler.sample(cfg.batch_size).to_torch()
        n += cfg.batch_size
    out["windows_per_s"] = round(n / (time.perf_counter() - t0), 1)
    out["window_horizon"], out["window_batch"] = cfg.horizon, cfg.batch_size
    return out
