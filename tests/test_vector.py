"""The batched forms step the same episodes as single envs."""

import numpy as np
import pytest

import sims
from sims.vector import ThreadedVectorEnv, make_vec


def test_threaded_vector_matches_single_envs():
    venv = ThreadedVectorEnv("lift", num_envs=3, num_threads=2)
    obs, _ = venv.reset(seed=7)
    singles = [sims.make("lift") for _ in range(3)]
    ref = [e.reset(seed=7 + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_array_equal(obs["objects"], np.stack([r["objects"] for r in ref]))
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
        obs, rew, term, trunc, infos = venv.step(a)
        for i, e in enumerate(singles):
            o, r, *_ = e.step(a[i])
            np.testing.assert_array_equal(obs["proprio"][i], o["proprio"])
            assert rew[i] == r
    assert obs["instruction"][0] == ref[0]["instruction"]
    venv.close()


@pytest.mark.parametrize("task,overrides", [("pick_place_clutter", {}), ("reach", {"action_mode": "joint"})])
def test_threaded_batched_controller_matches_single_envs_bit_for_bit(task, overrides):
    """The threaded form runs the controller once over the batch (sims.env.begin_steps): every
    copy must still step as its own env does, through resets and clipped actions."""
    n = 4
    venv = ThreadedVectorEnv(task, num_envs=n, num_threads=2, episode_length=25, **overrides)
    venv.reset(seed=3)
    singles = [sims.make(task, episode_length=25, **overrides) for _ in range(n)]
    for i, e in enumerate(singles):
        e.reset(seed=3 + i)
    rng = np.random.default_rng(1)
    for _ in range(60):  # past two episode ends
        a = rng.uniform(-1.5, 1.5, (n, *venv.single_action_space.shape)).astype(np.float32)
        obs, rew, term, trunc, infos = venv.step(a)
        for i, e in enumerate(singles):
            o, r, te, tr, info = e.step(a[i])
            if te or tr:
                info = {"final_info": info}
                o, _ = e.reset()
            for k in ("proprio", "objects", "goal"):
                np.testing.assert_array_equal(obs[k][i], o[k])
            assert obs["instruction"][i] == o["instruction"]
            assert (rew[i], term[i], trunc[i], infos[i]) == (r, te, tr, info)
    with pytest.raises(ValueError, match=r"copies \[2\] contain NaN"):
        bad = np.zeros((n, *venv.single_action_space.shape))
        bad[2, 0] = np.nan
        venv.step(bad)
    with pytest.raises(ValueError, match="actions have shape"):
        venv.step(np.zeros((n + 1, *venv.single_action_space.shape)))
    venv.close()


def test_threaded_vector_with_cameras_stacks_images():
    venv = ThreadedVectorEnv("reach", num_envs=2, cameras=("front",), image_size=(24, 24))
    obs, _ = venv.reset(seed=0)
    obs, *_ = venv.step(np.zeros((2, 5), np.float32))
    assert obs["image_front"].shape == (2, 24, 24, 3) and obs["proprio"].shape == (2, 22)
    venv.close()


def test_async_vector_env_steps():
    venv = make_vec("reach", 2)
    obs, _ = venv.reset(seed=0)
    assert obs["proprio"].shape == (2, 22) and obs["instruction"].dtype == np.uint8
    obs, rew, term, trunc, _ = venv.step(np.zeros((2, 5), np.float32))
    assert rew.shape == (2,)
    venv.close()


def test_process_vector_matches_single_envs():
    from sims.vector import ProcessVectorEnv

    venv = ProcessVectorEnv("lift", num_envs=3, num_workers=2, episode_length=6)
    try:
        obs, _ = venv.reset(seed=7)
        singles = [sims.make("lift", episode_length=6) for _ in range(3)]
        ref = [e.reset(seed=7 + i)[0] for i, e in enumerate(singles)]
        np.testing.assert_array_equal(obs["objects"], np.stack([r["objects"] for r in ref]))
        assert obs["instruction"] == [r["instruction"] for r in ref]
        rng = np.random.default_rng(0)
        for _ in range(8):  # crosses an episode end: copies reset in place
            a = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
            obs, rew, term, trunc, infos = venv.step(a)
            for i, e in enumerate(singles):
                o, r, te, tr, info = e.step(a[i])
                assert rew[i] == r and trunc[i] == tr
                if te or tr:
                    assert infos[i]["final_info"] == info
                    o, _ = e.reset()
                else:
                    assert infos[i] == info
                np.testing.assert_array_equal(obs["proprio"][i], o["proprio"])
                assert obs["instruction"][i] == o["instruction"]
        with pytest.raises(ValueError, match="copies \\[1\\]"):
            venv.step(np.array([[0] * 5, [np.nan] * 5, [0] * 5], np.float32))
        with pytest.raises(ValueError, match="expected \\(3, 5\\)"):
            venv.step(np.zeros((2, 5), np.float32))
        venv.step(np.zeros((3, 5), np.float32))  # still usable after refusing bad input
    finally:
        venv.close()
