"""How far the MuJoCo suite and its PyBullet twin diverge on the same expert actions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TwinBenchConfig:
    """How far the MuJoCo suite and its PyBullet twin diverge on the same actions."""

    task: str = "pick_place"
    """Task to compare."""
    episodes: int = 20
    """Episodes; each replays the MuJoCo expert's actions open-loop in PyBullet."""
    seed: int = 0
    """First episode seed."""


def bench_twin(cfg: TwinBenchConfig) -> dict:
    """Object end-position gap (cm) when PyBullet replays the MuJoCo expert's action sequence."""
    import sims
    from sims.experts import make_expert

    mj = sims.make(cfg.task, terminate_on_success=False)
    bl = sims.make(cfg.task, sim="pybullet", terminate_on_success=False)
    expert = make_expert(mj)
    gaps, tcp_gaps, both = [], [], 0
    for k in range(cfg.episodes):
        obs, _ = mj.reset(seed=cfg.seed + k)
        bl.reset(seed=cfg.seed + k)
        expert.reset()
        actions = []
        done = False
        while not done:
            a = expert.act(obs)
            actions.append(a)
            obs, _, term, trunc, info_mj = mj.step(a)
            done = term or trunc
        for a in actions:
            _, _, _, _, info_bl = bl.step(a)
        s_mj, s_bl = mj.unwrapped.world_state, bl.unwrapped.world_state
        gaps.append(float(np.linalg.norm(s_mj.obj_pos[0] - s_bl.obj_pos[0])) * 100)
        tcp_gaps.append(float(np.linalg.norm(s_mj.tcp_pos - s_bl.tcp_pos)) * 100)
        both += bool(info_mj["is_success"]) and bool(info_bl["is_success"])
    mj.close()
    bl.close()
    return {"task": cfg.task, "episodes": cfg.episodes,
            "object_gap_cm_median": round(float(np.median(gaps)), 3),
            "object_gap_cm_p90": round(float(np.percentile(gaps, 90)), 3),
            "tcp_gap_cm_median": round(float(np.median(tcp_gaps)), 3),
            "open_loop_success_in_both": both / cfg.episodes}
