"""The world model: imagine's contract, learning on a tiny real dataset, checkpoints, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sims
from policies import factory
from robotworld.data import CollectConfig, collect
from robotworld.model import CheckpointError, ModelSpec, WorldModel, load, model_config, save
from robotworld.model import checkpoint as ckpt
from robotworld.model.evaluate import WorldModelEvalConfig, auroc, ece, evaluate_world_model
from robotworld.model.train import TrainConfig, train

CLI = [sys.executable, "-m", "robotworld.cli"]


def _model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(ModelSpec(max_objects=2), model_config("tiny")).eval()


def _obs(task: str = "pick_place", seed: int = 0) -> dict:
    env = sims.make(task)
    obs, _ = env.reset(seed=seed)
    return obs


def test_imagine_shapes_and_determinism():
    m = _model()
    z = m.encode(_obs(), task="pick_place")
    assert z.latent.shape == (1, m.cfg.latent_dim)
    acts = torch.rand(8, 6, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = m.imagine(z, acts)
    assert out.latents.shape == (8, 7, m.cfg.latent_dim)
    for k in ("reward", "success", "grasp", "collision"):
        assert getattr(out, k).shape == (8, 6)
    assert out.object_pos.shape == (8, 6, 2, 3)
    assert ((out.grasp >= 0) & (out.grasp <= 1)).all()
    again = m.imagine(z, acts)
    assert torch.equal(out.latents, again.latents) and torch.equal(out.collision, again.collision)
    one = m.imagine(z, acts[3:4])  # a sequence gives the same result alone as in a batch
    torch.testing.assert_close(one.latents[0], out.latents[3], rtol=1e-5, atol=1e-6)
    # SimNorm: every group of the latent is a probability simplex
    groups = out.latents.reshape(8, 7, -1, m.cfg.simnorm_group).sum(-1)
    torch.testing.assert_close(groups, torch.ones_like(groups))


def test_simnorm_written_out_is_the_softmax(monkeypatch):
    """Where torch's CPU softmax is slow for the group size (vectors wider than a group, as
    AVX-512 and groups of 8), simnorm is written out as max, exp, sum and divide: the softmax's
    values and gradients, in place into a buffer too, finite for large logits; and each
    machine takes one form always."""
    import torch.nn.functional as F

    from robotworld.model import world_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g) * 30
    ref = F.softmax(x.view(64, 4, 8), -1).view(64, 32)
    written = world_model._simnorm_written_out
    torch.testing.assert_close(written(x, 8), ref, rtol=0, atol=1e-6)
    out = torch.empty_like(x)
    assert written(x, 8, out) is out
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert torch.isfinite(written(x * 100, 8)).all()
    w = torch.randn(64, 32, generator=g)
    grads = []
    for fn in (lambda v: written(v, 8), lambda v: F.softmax(v.view(64, 4, 8), -1).view(64, 32)):
        v = x.clone().requires_grad_()
        (fn(v) * w).sum().backward()
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)
    # the form follows the machine's vector width, not the call
    monkeypatch.setattr(world_model, "_cpu_vector_floats", lambda: 16)
    assert torch.equal(world_model.simnorm(x, 8), written(x, 8))
    assert torch.equal(world_model.simnorm(x, 16), F.softmax(x.view(64, 2, 16), -1).view(64, 32))
    monkeypatch.setattr(world_model, "_cpu_vector_floats", lambda: 8)
    assert torch.equal(world_model.simnorm(x, 8), ref)


def test_blocks_of_rows_give_the_numbers_of_one_pass(monkeypatch):
    """imagine runs its head MLPs over blocks of whole steps when there are many rows: with
    300 sequences of 7 steps (blocks of 900 rows, the last one short), one start per sequence
    included, full and lean, the numbers are those of one pass over all rows."""
    from robotworld.model import world_model

    m = _model()
    z = m.encode(_obs(), task="pick_place")
    obs = _obs()
    many = m.encode({**{k: np.repeat(np.asarray(v)[None], 300, 0) for k, v in obs.items() if k != "instruction"},
                     "instruction": [obs["instruction"]] * 300}, task="pick_place")
    acts = torch.rand(300, 7, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def run():
        with torch.no_grad():
            return (m.imagine(z, acts), m.imagine(many, acts),
                    m.imagine(z, acts.transpose(0, 1), objects="first", time_major=True))

    assert world_model.BLOCK_ROWS < 300 * 8
    blocked = run()
    monkeypatch.setattr(world_model, "BLOCK_ROWS", 10 ** 9)
    for got, want in zip(blocked, run()):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _reference_rollout(wm, s, acts, priors):
    """imagine written out step by step from the model's parts, batch-first: ``next`` one step
    at a time, ``read`` on every latent, the tool path, the moved gate and the priors."""
    from robotworld.model.priors import gripper_admits, lift_gate, touched

    B, H, _ = acts.shape
    zs, tb = [s.latent.expand(B, -1)], s.task.expand(B, -1)
    for t in range(H):
        zs.append(wm.next(zs[-1], acts[:, t], tb))
    latents = torch.stack(zs, 1)
    heads = wm.read(latents, tb)
    tool = wm.tool_path(latents[:, 0], latents[:, 1:], acts.cumsum(1), s.tool.expand(B, 3))
    moved = torch.sigmoid(wm.moved_logits(latents[:, 0], latents[:, 1:]))
    anchor = s.objects.expand(B, -1, -1)
    if priors.touch:
        moved = moved * touched(tool.transpose(0, 1), anchor, priors).transpose(0, 1)
    pos = anchor[:, None] + moved[..., None] * (heads["object_pos"][:, 1:] - heads["object_pos"][:, :1])
    grasp = wm.grasp_prob(heads["grasp"][:, 1:], tool, pos[:, :, 0])
    if priors.empty_gripper:
        grasp = grasp * gripper_admits(s.finger, acts[..., -1].T, tool.transpose(0, 1), pos[:, :, 0].transpose(0, 1),
                                       s.tool - anchor[:, 0], priors).T
    obj0 = lift_gate(pos[:, :, 0], anchor[:, None, 0], grasp, priors) if priors.lift else pos[:, :, 0]
    collision = torch.sigmoid(heads["collision"][:, 1:] + wm.contact_logit(tool))
    reward, success = wm.outcomes(tool, obj0, s.goal[:, None].expand_as(tool), grasp, tb)
    pos = torch.cat((obj0[:, :, None], pos[:, :, 1:]), 2)
    return latents, pos, tool, grasp, collision, reward, torch.sigmoid(success)


@pytest.mark.parametrize("switch", [None, "touch", "empty_gripper", "centring", "lift"])
def test_imagine_equals_the_parts_step_by_step(switch):
    """imagine (time-major, first layers split by input) gives what its parts compute step by
    step, with every prior on and with each turned off; the lean view (first object,
    time-major) is the same numbers; gradients flow through it."""
    import dataclasses

    from robotworld.model import load
    from robotworld.model.priors import DEFAULT

    wm = load("default")
    s = wm.encode(_obs("lift", 3), task="lift")
    priors = DEFAULT if switch is None else dataclasses.replace(DEFAULT, **{switch: False})
    acts = torch.rand(6, 9, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref = _reference_rollout(wm, s, acts, priors)
        out = wm.imagine(s, acts, priors=priors)
        lean = wm.imagine(s, acts.transpose(0, 1), objects="first", time_major=True, priors=priors)
    torch.testing.assert_close(out.latents, ref[0], atol=1e-5, rtol=1e-4)
    for got, want in zip((out.object_pos, out.tool_pos, out.grasp, out.collision, out.reward, out.success), ref[1:]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for name in ("reward", "success", "grasp", "collision", "tool_pos"):
        torch.testing.assert_close(getattr(lean, name).transpose(0, 1), getattr(out, name), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lean.object_pos.transpose(0, 1)[:, :, 0], out.object_pos[:, :, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lean.last, out.last)
    a = acts.clone().requires_grad_()
    wm.imagine(s, a, priors=priors).reward.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_encode_and_imagine_keep_no_state():
    """A Start holds everything a rollout needs: encoding another observation in between, or
    imagining from two threads at once, gives the same results as calling alone."""
    from concurrent.futures import ThreadPoolExecutor

    from robotworld.model import load

    wm = load("default")
    acts = torch.rand(16, 8, 5, generator=torch.Generator().manual_seed(2)) * 2 - 1
    obs_a, obs_b = _obs("lift", 1), _obs("pick_place_clutter", 2)
    with torch.no_grad():
        alone_a = wm.imagine(wm.encode(obs_a, task="lift"), acts)
        alone_b = wm.imagine(wm.encode(obs_b, task="pick_place_clutter"), acts)
        start_a = wm.encode(obs_a, task="lift")
        wm.encode(obs_b, task="pick_place_clutter")  # another observation in between
        interleaved = wm.imagine(start_a, acts)
    for got, want in zip(interleaved, alone_a):
        assert torch.equal(got, want)

    def job(k: int):
        obs, task = (obs_a, "lift") if k % 2 == 0 else (obs_b, "pick_place_clutter")
        with torch.no_grad():
            return wm.imagine(wm.encode(obs, task=task), acts)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(job, range(8)))
    for k, r in enumerate(results):
        for got, want in zip(r, alone_a if k % 2 == 0 else alone_b):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not [k for k in vars(wm) if k.startswith("last_")]


def test_bad_observations_and_actions_are_refused():
    m = _model()
    obs = _obs()
    with pytest.raises(ValueError, match="no 'goal'"):
        m.encode({k: v for k, v in obs.items() if k != "goal"})
    with pytest.raises(ValueError, match="proprio"):
        m.encode(dict(obs, proprio=np.zeros(21, np.float32)))
    with pytest.raises(ValueError, match="at most 2"):
        m.encode(dict(obs, objects=np.zeros(21, np.float32)))
    with pytest.raises(ValueError, match="not one this model knows"):
        m.encode(obs, task="stack")
    z = m.encode(obs)
    with pytest.raises(ValueError, match=r"expected \(B, H, 5\)"):
        m.imagine(z, torch.zeros(4, 3, 8))


def test_checkpoint_round_trip_and_refusals(tmp_path: Path):
    m = _model(1)
    path = tmp_path / "wm.pt"
    save(path, m)
    back = load(path)
    z0, z1 = m.encode(_obs(), task="lift"), back.encode(_obs(), task="lift")
    acts = torch.zeros(2, 4, 5)
    assert torch.equal(z0.latent, z1.latent) and torch.equal(m.imagine(z0, acts).reward, back.imagine(z1, acts).reward)
    # a tampered file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    bad = tmp_path / "tampered.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load(bad)
    # not a checkpoint at all, and a torch file of another kind
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a robotworld world-model checkpoint"):
        load(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format"):
        load(tmp_path / "other.pt")
    # another format version
    body = torch.load(path, weights_only=True)
    body["format_version"] = 99
    torch.save(body, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load(tmp_path / "future.pt")
    # a pickle that would run code is refused by weights_only, never executed
    torch.save({"format": ckpt.FORMAT, "payload": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "pwned",))


def test_auroc_and_ece_on_known_cases():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    e, _ = ece(np.array([0.0, 1.0]), np.array([0, 1]))
    assert e == 0.0


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wm") / "lift"
    collect(CollectConfig(task="lift", policy="noisy-expert", episodes=60, workers=2, out=str(out), progress=False),
            factory("noisy-expert"))
    return str(out)


def _cfg(data: str, out: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(data=data, out=str(out), preset="tiny", steps=steps, batch_size=64, horizon=6,
                       eval_every=kw.pop("eval_every", steps), progress=False, threads=2, **kw)


def test_a_briefly_trained_model_beats_the_constant_position_baseline(tiny_data: str, tmp_path: Path):
    # 1,200 steps: after 600, the 20-step error over the baseline's ranged 0.52-0.95 across
    # training seeds 0-7 (seed 0 at 0.95 on an AVX-512 machine), a coin toss against 0.8; after
    # 1,200 it ranged 0.33-0.66 over twelve runs (seeds 0-5, both SimNorm forms, both kernels)
    train(_cfg(tiny_data, tmp_path, 1200, lr=3e-3))
    res = evaluate_world_model(WorldModelEvalConfig(checkpoint=str(tmp_path / "checkpoint.pt"), data=tiny_data,
                                                    windows=512, device="cpu"))
    # where the object moves (lifted), the model knows where it went; standing still is free
    for h in (10, 20):
        assert res[f"pos_err_cm_h{h}_moving"] < 0.8 * res[f"baseline_pos_err_cm_h{h}_moving"], res
    assert res["grasp_auroc"] > 0.9
    assert Path(res["plots"][0]).exists() and Path(res["plots"][1]).exists()


def test_resume_continues_step_count_and_optimizer(tiny_data: str, tmp_path: Path):
    train(_cfg(tiny_data, tmp_path, 20, eval_every=10))
    first = ckpt.read(tmp_path / "checkpoint.pt")
    assert first["step"] == 20
    train(_cfg(tiny_data, tmp_path, 30, eval_every=10, resume=True))
    body = ckpt.read(tmp_path / "checkpoint.pt")
    assert body["step"] == 30
    adam_steps = {int(s["step"]) for s in body["optimizer"]["state"].values()}
    assert adam_steps == {30}


def test_fine_tuning_adds_a_grasp_ensemble_that_disagrees_off_the_data(tiny_data: str, tmp_path: Path):
    base = tmp_path / "base"
    train(_cfg(tiny_data, base, 300, lr=3e-3))
    # lr 0: the init's weights come through unchanged; only the new members are new
    train(_cfg(tiny_data, tmp_path / "same", 1, lr=0.0, init=str(base / "checkpoint.pt"), ensemble=4))
    a, b = load(base / "checkpoint.pt"), load(tmp_path / "same" / "checkpoint.pt")
    assert b.cfg.ensemble == 4 and a.cfg.ensemble == 0
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and {k for k in sb if k not in sa} == \
        {"members.first.weight", "members.first.bias", "members.out_weight", "members.out_bias"}
    obs = _obs("lift")
    acts = torch.rand(64, 8, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ia, ib = a.imagine(a.encode(obs, "lift"), acts), b.imagine(b.encode(obs, "lift"), acts)
    assert not ia.doubt.any() and ia.doubt.shape == (64, 8) and ib.doubt.shape == (64, 8) and float(ib.doubt.min()) >= 0
    assert torch.equal(ia.grasp, ib.grasp) and torch.equal(ia.object_pos, ib.object_pos)
    # trained, the members agree on the data far more than on states it never showed: the
    # gripper hovering 25 cm above an object far outside the table workspace
    train(_cfg(tiny_data, tmp_path / "tuned", 300, lr=3e-3, init=str(base / "checkpoint.pt"), ensemble=4))
    m = load(tmp_path / "tuned" / "checkpoint.pt")
    assert m.cfg.ensemble == 4
    far = dict(obs, objects=obs["objects"].copy())
    far["objects"][:3] = [1.5, 0.9, 0.3]
    with torch.no_grad():
        seen = m.imagine(m.encode(obs, "lift"), acts).doubt.mean()
        unseen = m.imagine(m.encode(far, "lift"), acts).doubt.mean()
    assert float(unseen) > 2 * float(seen), (float(seen), float(unseen))
    # the doubt term charges that spread, weighted, and only where its weight is set
    from robotworld.planning.costs import CostWeights, Scorer

    plain, charged = Scorer(m).score(far, acts, "lift"), Scorer(m, CostWeights(doubt=2.0)).score(far, acts, "lift")
    assert "doubt" not in plain.terms and torch.allclose(charged.terms["doubt"], charged.imagined.doubt)
    assert torch.allclose(charged.cost - plain.cost, 2.0 * charged.terms["doubt"].sum(1), atol=1e-5)


def test_cli_train_eval_and_bench(tiny_data: str, tmp_path: Path):
    run = subprocess.run(CLI + ["train", "world-model", "--data", tiny_data, "--out", str(tmp_path), "--steps", "5",
                                "--preset", "tiny", "--batch-size", "32", "--horizon", "4", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ev = subprocess.run(CLI + ["eval", "world-model", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--data",
                               tiny_data, "--windows", "256", "--json"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    for k in ("pos_err_cm_h1", "pos_err_cm_h5", "pos_err_cm_h10", "pos_err_cm_h20", "grasp_auroc", "grasp_ece",
              "collision_auroc", "reward_mae"):
        assert k in res
    assert (tmp_path / "metrics.json").exists()
    bench = subprocess.run(CLI + ["bench", "imagine", "--checkpoint", "tiny", "--batch", "64", "--iters", "2",
                                  "--json"], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout)
    assert figures["transitions_per_s"] > 0 and figures["matmul_gflops"] > 0
    bad = subprocess.run(CLI + ["eval", "world-model", "--checkpoint", str(tmp_path / "nope.pt"), "--data", tiny_data],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_torchrun_data_parallel_on_cpu(tiny_data: str, tmp_path: Path):
    """The same command under torchrun: two processes, gloo on CPU, one checkpoint from rank 0."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", "-m", "robotworld.cli", "train", "world-model", "--data", tiny_data, "--out",
                          str(tmp_path), "--steps", "6", "--eval-every", "3", "--preset", "tiny", "--batch-size", "32",
                          "--horizon", "4", "--device", "cpu", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    body = ckpt.read(tmp_path / "checkpoint.pt")
    assert body["step"] == 6


def _straight(start: np.ndarray, target: np.ndarray, grip: float, steps: int = 12) -> torch.Tensor:
    """Actions (1, steps, 5) that move the tool from start towards target at full speed."""
    d = target - start
    a = np.r_[d / np.abs(d).max(), 0.0, grip]
    return torch.tensor(np.tile(a, (steps, 1)), dtype=torch.float32)[None]


def test_shipped_model_imagines_rewards_and_grasps_where_physics_gives_them():
    """What a planner leans on: moving towards the goal is imagined as better than away, and
    closing the gripper in the air is not imagined as a grasp (the shipped checkpoint)."""
    wm = load("default")
    env = sims.make("reach")
    obs, _ = env.reset(seed=3)
    tool, goal = obs["proprio"][15:18], obs["goal"]
    wm.encode(obs, task="reach")
    with torch.no_grad():
        towards = wm.imagine(wm.encode(obs, task="reach"), _straight(tool, goal, 1.0))
        away = wm.imagine(wm.encode(obs, task="reach"), _straight(tool, 2 * tool - goal, 1.0))
    assert towards.reward.sum() > away.reward.sum() + 0.3, (towards.reward, away.reward)
    true_reward, true_tool = [], []  # the same actions in physics
    for a in _straight(tool, goal, 1.0)[0].numpy():
        _, r, *_ = env.step(a)
        true_reward.append(r)
        true_tool.append(env.unwrapped._state.tcp_pos.copy())
    # over a planner's horizon of 8 steps (the tool moves 24 cm), within 5 points of reward, 2 cm
    np.testing.assert_allclose(towards.reward[0, :8].numpy(), true_reward[:8], atol=0.05)
    np.testing.assert_allclose(towards.tool_pos[0, :8].numpy(), true_tool[:8], atol=0.02)
    env = sims.make("lift")
    obs, _ = env.reset(seed=3)
    with torch.no_grad():
        z = wm.encode(obs, task="lift")
        close_in_air = wm.imagine(z, torch.tensor([[[0.0, 0.0, 0.0, 0.0, -1.0]] * 8]))
    assert float(close_in_air.grasp.max()) < 0.2, close_in_air.grasp


def test_objects_stay_put_until_the_imagined_tool_comes_near():
    """The touch prior: a plan that closes the gripper and rises far from the cube cannot
    imagine the cube moving; once the tool has passed near an object the gate stays open.
    Without the prior, the learned model alone keeps the cube within a centimetre."""
    from robotworld.model.priors import DEFAULT, NONE, touched

    wm = load("default")
    env = sims.make("lift")
    obs, _ = env.reset(seed=3)
    start = torch.as_tensor(obs["objects"][:3])
    with torch.no_grad():
        z = wm.encode(obs, task="lift")
        up_and_close = torch.tensor([[[0.0, 0.0, 1.0, 0.0, -1.0]] * 12])
        out = wm.imagine(z, up_and_close, priors=DEFAULT)
        learned = wm.imagine(z, up_and_close, priors=NONE)
    assert float((out.object_pos[0, :, 0] - start).abs().max()) < 1e-3, out.object_pos[0, :, 0]
    assert float(out.success.max()) < 0.05, out.success
    assert float((learned.object_pos[0, :, 0] - start).abs().max()) < 0.01, learned.object_pos[0, :, 0]
    far, near = torch.tensor([0.3, 0.0, 0.3]), torch.tensor([0.51, 0.0, 0.02])
    gate = touched(torch.stack([far, near, far])[:, None], torch.tensor([[[0.5, 0.0, 0.02]]]))  # time-major
    assert gate.shape == (3, 1, 1)
    np.testing.assert_allclose(gate[:, 0, 0].numpy(), [0.0, 1.0, 1.0], atol=1e-6)
