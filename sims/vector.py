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
    """``num_envs`` copies whose physics runs on a pool of threads, one per core.

    MuJoCo releases the GIL inside ``mj_step``, so the copies' physics runs on all cores while
    the light Python (controller, observation) runs on one: on two cores this beats one
    process per copy, whose pipes cost more than the physics they parallelise (BENCHMARKS.md).
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
        self._threads = threads
        self._pool = ThreadPoolExecutor(max(threads - 1, 1))
        self.single_action_space = self.envs[0].action_space
        self.single_observation_space = self.envs[0].observation_space
        self._raw = [env.unwrapped for env in self.envs]

    def reset(self, seed: int | None = None):
        out = [env.reset(seed=None if seed is None else seed + i)
               for i, env in enumerate(self.envs)]
        return self._stack([o for o, _ in out]), [i for _, i in out]

    def _advance(self, queue) -> None:
        # Copies are taken one at a time from a shared iterator (next() on it is atomic under
        # the GIL): a copy in contact costs several times one in free motion, so fixed slices
        # would leave a thread idle.
        for i in queue:
            self._raw[i].physics.advance()

    def step(self, actions):
        """actions: (num_envs, A). Returns stacked obs, rewards, terminated, truncated, infos.

        Three phases: every copy's controller on this thread, then the physics of all copies
        on this thread and the pool's (the GIL is released inside mj_step, so they run in
        parallel; this thread taking a share saves a hand-over, about 6% here), then
        every copy's observation on this thread. Interleaving whole steps across threads
        instead makes the threads trade the GIL at each short MuJoCo call.
        """
        import numpy as np

        for env, a in zip(self._raw, actions):
            env.begin_step(a)
        # this thread steps copies too, beside threads - 1 pool workers: one hand-over fewer
        queue = iter(range(self.num_envs))
        helpers = [self._pool.submit(self._advance, queue) for _ in range(self._threads - 1)]
        self._advance(queue)
        for h in helpers:
            h.result()
        results = []
        for env in self._raw:
            obs, r, term, trunc, info = env.finish_step()
            if term or trunc:
                info = {"final_info": info}
                obs, _ = env.reset()
            results.append((obs, r, term, trunc, info))
        obs, rew, term, trunc, infos = zip(*results)
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
