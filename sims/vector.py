"""Many copies of a task stepped at once, through Gymnasium's vector API.

``AsyncVectorEnv`` runs one process per copy, so the physics of all copies runs on all cores.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def make_vec(task: str, num_envs: int, sim: str = "mujoco", asynchronous: bool = True,
             **overrides: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a task (processes when asynchronous); instructions as bytes."""
    import sims

    sims.make_config(task, **overrides)  # fail here, in this process, on bad overrides
    from sims.wrappers import NumericInstruction

    # The instruction travels as bytes so that every observation fits in shared memory.
    fns = [lambda: NumericInstruction(sims.make(task, sim=sim, **overrides))
           for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, shared_memory=True, context="spawn")
    return gym.vector.SyncVectorEnv(fns)


class ThreadedVectorEnv:
    """``num_envs`` copies stepped by a pool of threads, each owning a contiguous slice.

    MuJoCo releases the GIL inside ``mj_step``, so one thread's physics runs while another
    thread's Python (controller, observation) runs: on two cores this beats one process per
    copy, whose pipes cost more than the physics they parallelise (see BENCHMARKS.md).
    Finished episodes are reset in place (the returned observation is the new episode's first;
    ``infos[i]["final_info"]`` holds the finished episode's last info).
    """

    def __init__(self, task: str, num_envs: int, num_threads: int = 0, sim: str = "mujoco",
                 **overrides: Any) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        import sims

        if num_envs < 1:
            raise ValueError(f"num_envs = {num_envs}: expected at least 1")
        self.envs = [sims.make(task, sim=sim, **overrides) for _ in range(num_envs)]
        self.num_envs = num_envs
        threads = max(1, min(num_threads or os.cpu_count() or 1, num_envs))
        bounds = [round(i * num_envs / threads) for i in range(threads + 1)]
        self._slices = [range(bounds[i], bounds[i + 1]) for i in range(threads)]
        self._pool = ThreadPoolExecutor(threads)
        self.single_action_space = self.envs[0].action_space
        self.single_observation_space = self.envs[0].observation_space
        self._results: list = [None] * num_envs

    def reset(self, seed: int | None = None):
        out = [env.reset(seed=None if seed is None else seed + i)
               for i, env in enumerate(self.envs)]
        return self._stack([o for o, _ in out]), [i for _, i in out]

    def _run(self, idx: range, actions) -> None:
        for i in idx:
            obs, r, term, trunc, info = self.envs[i].step(actions[i])
            if term or trunc:
                info = {"final_info": info}
                obs, _ = self.envs[i].reset()
            self._results[i] = (obs, r, term, trunc, info)

    def step(self, actions):
        """actions: (num_envs, A). Returns stacked obs, rewards, terminated, truncated, infos."""
        list(self._pool.map(self._run, self._slices, [actions] * len(self._slices)))
        obs, rew, term, trunc, infos = zip(*self._results)
        import numpy as np

        return (self._stack(obs), np.array(rew), np.array(term), np.array(trunc), list(infos))

    @staticmethod
    def _stack(obs: list[dict]) -> dict:
        import numpy as np

        return {k: ([o[k] for o in obs] if isinstance(obs[0][k], str) else np.stack([o[k] for o in obs]))
                for k in obs[0]}

    def close(self) -> None:
        self._pool.shutdown()
        for env in self.envs:
            env.close()
