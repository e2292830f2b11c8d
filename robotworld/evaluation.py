"""Policy evaluation: seeded episodes, success with a 95% interval, optional videos."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from robotworld.stats import wilson_interval


@dataclass
class EvalConfig:
    """One evaluation run."""

    task: str = "pick_place"
    """Task name (see ``robotworld eval --help``)."""
    policy: str = "expert"
    """Policy: expert, noisy-expert, fumbling-expert, random, zero, mpc (MPPI over the shipped
    world model), or a world-model checkpoint PATH.pt / mpc:PATH to plan with."""
    episodes: int = 100
    """Number of episodes; episode k is reset with seed + k."""
    seed: int = 0
    """First episode seed."""
    sim: str = "mujoco"
    """Physics engine: mujoco or pybullet."""
    video: str | None = None
    """Directory for mp4 videos of the first ``video_episodes`` episodes."""
    video_episodes: int = 1
    """How many episodes to record when ``video`` is set."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class EvalResult:
    task: str
    policy: str
    sim: str
    episodes: int
    seeds: list[int]
    success_rate: float
    success_ci95: list[float]
    collision_rate: float
    mean_episode_steps: float
    videos: list[str]
    collisions_per_episode: float = 0.0
    """Mean number of steps with a collision per episode (collision_rate counts episodes)."""


def write_video(frames: list[np.ndarray], path: Path, fps: int = 20) -> None:
    """Write frames to an mp4 atomically (temporary name, then rename)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    try:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7,
                                macro_block_size=8) as w:
            for f in frames:
                w.append_data(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_episode(env, policy, seed: int, record: bool = False):
    """One episode. Returns (success, collision steps, steps, frames)."""
    obs, info = env.reset(seed=seed)
    policy.reset(env)
    frames = [env.unwrapped.physics.render("front", 240, 320)] if record else []
    success = False
    steps = collisions = 0
    done = False
    while not done:
        for a in policy.act(obs):
            obs, _, terminated, truncated, info = env.step(a)
            steps += 1
            collisions += bool(info["collision"])
            success |= bool(info["is_success"])
            if record:
                frames.append(env.unwrapped.physics.render("front", 240, 320))
            done = terminated or truncated
            if done:
                break
    return success, collisions, steps, frames


def evaluate(cfg: EvalConfig, **overrides) -> EvalResult:
    """Run ``cfg.episodes`` seeded episodes of a policy on a task."""
    from tqdm import tqdm

    import sims
    from policies import make_policy

    if cfg.episodes < 1:
        raise ValueError(f"episodes = {cfg.episodes}: expected at least 1")
    env = sims.make(cfg.task, sim=cfg.sim, **overrides)
    policy = make_policy(cfg.policy, seed=cfg.seed)
    wins = hits = contacts = 0
    lengths, videos = [], []
    bar = tqdm(range(cfg.episodes), desc=f"{cfg.task}/{cfg.policy}/{cfg.sim}",
               disable=not cfg.progress, leave=False)
    for k in bar:
        record = cfg.video is not None and k < cfg.video_episodes
        ok, n_hits, steps, frames = run_episode(env, policy, cfg.seed + k, record)
        wins += ok
        hits += n_hits > 0
        contacts += n_hits
        lengths.append(steps)
        if record:
            path = Path(cfg.video) / f"{cfg.task}_{cfg.sim}_{cfg.policy}_seed{cfg.seed + k}.mp4"
            write_video(frames, path)
            videos.append(str(path))
        bar.set_postfix(success=f"{wins}/{k + 1}")
    env.close()
    lo, hi = wilson_interval(wins, cfg.episodes)
    return EvalResult(cfg.task, cfg.policy, cfg.sim, cfg.episodes,
                      [cfg.seed, cfg.seed + cfg.episodes - 1], wins / cfg.episodes,
                      [round(lo, 4), round(hi, 4)], hits / cfg.episodes,
                      float(np.mean(lengths)), videos, contacts / cfg.episodes)


def as_dict(result: EvalResult) -> dict:
    return asdict(result)
