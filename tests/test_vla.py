"""The VLA: teacher labels, the language encoder, the network, training, checkpoints, and the
policies that act with it (alone and imagining first). Real MuJoCo with cameras, real files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import sims
from robotworld.data import CollectConfig, collect
from robotworld.data.dataset import Dataset
from robotworld.data.windows import WindowSampler
from robotworld.policy import Scene
from robotworld.vla import checkpoint as ckpt
from robotworld.vla.configs import PolicyTrainConfig, VLAConfig
from robotworld.vla.language import embed
from robotworld.vla.network import VLA, VLASpec

SIZE = 32  # small frames keep the tests fast; the shipped VLA sees 64 x 64


def _collect(root, task: str, policy: str, episodes: int, seed: int = 1000000) -> str:
    from policies import factory

    out = str(root / f"{task}_{policy}")
    collect(CollectConfig(task=task, policy=policy, episodes=episodes, workers=1, seed=seed, out=out,
                          cameras="front,wrist", progress=False), factory(policy), image_size=(SIZE, SIZE))
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("vla_demos")
    return [_collect(root, "reach", "noisy-expert", 24), _collect(root, "lift", "noisy-expert", 3)]


@pytest.fixture(scope="module")
def trained(demos, tmp_path_factory):
    from robotworld.vla.train import train

    out = tmp_path_factory.mktemp("vla_run")
    metrics = train(PolicyTrainConfig(data=",".join(demos), out=str(out), steps=400, eval_every=400, batch_size=32,
                                      lr=1e-3, holdout_every=8, device="cpu", progress=False, seed=0))
    return out / "checkpoint.pt", metrics


# ---- teacher labels --------------------------------------------------------------------------
def test_noisy_expert_records_its_clean_labels(demos):
    ep = Dataset(demos[1]).episode(0)
    assert ep["label"].shape == ep["action"].shape
    motion = np.abs(ep["label"][:, :4] - ep["action"][:, :4])
    assert motion.mean() > 0.05  # the noise is in the applied action, not in the label
    assert np.abs(ep["label"]).max() <= 1.0


def test_expert_labels_equal_its_actions(tmp_path):
    ep = Dataset(_collect(tmp_path, "reach", "expert", 1)).episode(0)
    np.testing.assert_array_equal(ep["label"], ep["action"])


def test_windows_carry_labels_or_fall_back_to_actions(demos, tmp_path):
    w = WindowSampler(demos[0], horizon=8, labels=True, obs_keys=("proprio", "image_front")).sample(16, True)
    assert w.label.shape == w.action.shape and w.obs["image_front"].shape == (16, 1, SIZE, SIZE, 3)
    # a dataset without labels (random actions) gives its applied actions as the labels
    out = str(tmp_path / "random")
    from policies import factory

    collect(CollectConfig(task="reach", policy="random", episodes=2, workers=1, out=out, progress=False),
            factory("random"))
    w = WindowSampler(out, horizon=4, labels=True).sample(8)
    np.testing.assert_array_equal(w.label, w.action)


# ---- language --------------------------------------------------------------------------------
def test_sentence_encoder_tells_tasks_apart_and_caches():
    a, b, c = embed(["pick up the red cube", "lift the red cube", "put the blue cylinder in the green zone"])
    assert a.shape == (384,) and abs(np.linalg.norm(a) - 1) < 1e-4
    assert a @ b > 0.8 > a @ c
    np.testing.assert_array_equal(embed("pick up the red cube"), a)


# ---- the network -----------------------------------------------------------------------------
def _net(seed: int = 0) -> VLA:
    torch.manual_seed(seed)
    return VLA(VLASpec(image_size=SIZE), VLAConfig(chunk=8, flow_steps=4)).eval()


def _inputs(B: int):
    g = torch.Generator().manual_seed(1)
    images = {c: torch.randint(0, 255, (B, SIZE, SIZE, 3), generator=g, dtype=torch.uint8) for c in ("front", "wrist")}
    return images, torch.randn(B, 22, generator=g), torch.randn(B, 384, generator=g)


def test_samples_have_the_chunk_shape_in_bounds_and_differ():
    net = _net()
    with torch.no_grad():
        z = net.features(*_inputs(3))
        x = net.sample(z, 5, torch.Generator().manual_seed(0))
        mean = net.sample(z, 4, noise=0.0)
    assert x.shape == (3, 5, 8, 5) and x.abs().max() <= 1.0
    assert (x[:, 1:] - x[:, :1]).abs().amax() > 1e-3  # k draws, k distinct chunks
    assert torch.allclose(mean[:, 1:], mean[:, :1])  # no noise, one path
    objs, goal = net.estimate(z)
    assert objs.shape == (3, 2, 3) and goal.shape == (3, 3)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    net = _net()
    path = tmp_path / "vla.pt"
    ckpt.save(path, net)
    back = ckpt.load(path)
    with torch.no_grad():
        z1, z2 = net.features(*_inputs(2)), back.features(*_inputs(2))
    torch.testing.assert_close(z1, z2)
    body = torch.load(path, weights_only=True)
    for change, match in (({"format_version": 99}, "format version 99"), ({"format": "other"}, "not a robotworld VLA"),
                          ({"checksum": "0" * 64}, "checksum")):
        torch.save({**body, **change}, tmp_path / "bad.pt")
        with pytest.raises(ckpt.VLACheckpointError, match=match):
            ckpt.load(tmp_path / "bad.pt")
    cfg = {**body["config"], "spec": {**body["config"]["spec"], "encoder": "another-encoder"}}
    torch.save({**body, "config": cfg}, tmp_path / "enc.pt")
    with pytest.raises(ckpt.VLACheckpointError, match="language encoder"):
        ckpt.load(tmp_path / "enc.pt")
    with pytest.raises(ckpt.VLACheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


# ---- training --------------------------------------------------------------------------------
def test_training_learns_the_teacher(trained, demos):
    """400 steps: the held-out chunks come much closer to the teacher's than an untrained net's."""
    from robotworld.vla.train import Demonstrations, held_out_metrics

    path, metrics = trained
    held = Demonstrations(demos, 8, 1, 8, "held-out")
    before = held_out_metrics(VLA(ckpt.load(path).spec, VLAConfig()).eval(), held, torch.device("cpu"))
    assert metrics["heldout_chunk_mae"] < 0.6 * before["heldout_chunk_mae"], (metrics, before)
    assert metrics["heldout_goal_err_cm"] < 0.6 * before["heldout_goal_err_cm"], (metrics, before)


def test_training_resumes_where_it_stopped(demos, tmp_path):
    from robotworld.vla.train import train

    cfg = dict(data=demos[0], out=str(tmp_path / "run"), batch_size=8, eval_every=2, holdout_every=8, device="cpu",
               progress=False)
    train(PolicyTrainConfig(steps=2, **cfg))
    m = train(PolicyTrainConfig(steps=4, resume=True, **cfg))
    assert m["step"] == 4 and ckpt.read(tmp_path / "run" / "checkpoint.pt")["step"] == 4



def test_fine_tune_starts_from_the_weights_with_a_new_schedule(trained, demos, tmp_path):
    from robotworld.vla.train import train

    path, _ = trained
    cfg = dict(data=",".join(demos), batch_size=8, eval_every=2, holdout_every=8, device="cpu", progress=False)
    m = train(PolicyTrainConfig(steps=2, init=str(path), out=str(tmp_path / "ft"), lr=1e-9, **cfg))
    body = ckpt.read(tmp_path / "ft" / "checkpoint.pt")
    assert body["step"] == 2 and m["step"] == 2  # a fresh count, not the init run's 400
    start = ckpt.load(path).state_dict()
    tuned = ckpt.load(tmp_path / "ft" / "checkpoint.pt").state_dict()
    assert all(torch.allclose(start[k], tuned[k], atol=1e-5) for k in start)  # lr ~ 0: the weights kept
    with pytest.raises(ValueError, match="chunks of 8, not 4"):
        train(PolicyTrainConfig(steps=2, init=str(path), out=str(tmp_path / "ft2"), chunk=4, **cfg))
    with pytest.raises(ValueError, match="estimator_loss"):
        train(PolicyTrainConfig(steps=2, estimator_loss="l3", out=str(tmp_path / "ft3"), **cfg))

# ---- the policies ----------------------------------------------------------------------------
def _env(task: str):
    return sims.make(task, cameras=("front", "wrist"), image_size=(SIZE, SIZE))


def test_vla_policy_acts_in_bounds_and_replays_under_a_seed(trained):
    from policies.vla import VLAPolicy, VLAPolicyConfig

    policy = VLAPolicy(VLAPolicyConfig(str(trained[0]), execute=3, device="cpu"))
    env = _env("reach")
    obs, _ = env.reset(seed=5)
    policy.reset(5, Scene.of(env))
    a = policy.act(obs)
    assert a.shape == (3, 5) and np.abs(a).max() <= 1.0
    policy.reset(5, Scene.of(env))
    np.testing.assert_array_equal(policy.act(obs), a)
    chunks = policy.sample(obs, 6)
    assert chunks.shape == (6, 8, 5) and np.ptp(chunks, axis=0).max() > 1e-3
    est = policy.estimate(obs)
    assert est["objects"].shape == obs["objects"].shape and est["goal"].shape == (3,)
    with pytest.raises(ValueError, match="image_wrist"):
        policy.act({k: v for k, v in obs.items() if k != "image_wrist"})
    with pytest.raises(ValueError, match="instruction"):
        policy.act({**obs, "instruction": ""})


def test_vla_reaches_better_than_doing_nothing(trained):
    """Closed loop on reach, seeds 0-3: after 400 steps of cloning the tool ends nearer the marker
    than where it started, on average, by a margin no motionless or random policy gets."""
    from policies.vla import VLAPolicy, VLAPolicyConfig

    policy = VLAPolicy(VLAPolicyConfig(str(trained[0]), device="cpu"))
    env = _env("reach")
    gains = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        policy.reset(seed, Scene.of(env))
        start = np.linalg.norm(env.unwrapped.world_state.tcp_pos - obs["goal"])
        for _ in range(5):
            for a in policy.act(obs):
                obs, *_ = env.step(a)
        gains.append(start - np.linalg.norm(env.unwrapped.world_state.tcp_pos - obs["goal"]))
    assert np.mean(gains) > 0.05, gains


def test_imagine_policy_reports_what_it_imagined(trained):
    from policies.vla import ImagineConfig, ImaginePolicy

    env = _env("lift")
    obs, _ = env.reset(seed=2)
    for state in ("privileged", "estimated"):
        policy = ImaginePolicy(ImagineConfig(vla=str(trained[0]), candidates=6, state=state, device="cpu"))
        policy.reset(2, Scene.of(env))
        policy.warm_up(obs)  # a decision and an MPC refinement, as the ROS bridge runs before acting
        policy.reset(2, Scene.of(env))
        a = policy.act(obs)
        info = policy.last_info
        assert info["candidates"].shape == (6, 8, 5) and info["cost"].shape == (6,)
        assert info["imagined"]["grasp"].shape == (6, 8) and info["reason"]
        if info["choice"] >= 0:
            assert info["passed"][info["choice"]]
            np.testing.assert_array_equal(a, info["candidates"][info["choice"]][:4])
        assert ("estimated" in info) == (state == "estimated")
    # another checkpoint's estimator: its estimate is what imagination reads
    policy = ImaginePolicy(ImagineConfig(vla=str(trained[0]), candidates=3, state="estimated",
                                         estimator=str(trained[0]), refine="never", device="cpu"))
    policy.reset(2, Scene.of(env))
    policy.act(obs)
    own = policy.vla.estimate(obs)
    np.testing.assert_allclose(policy.last_info["estimated"]["goal"], own["goal"], atol=1e-6)
    with pytest.raises(ValueError, match="expected the same"):  # the shipped VLA sees 64 x 64 frames
        ImaginePolicy(ImagineConfig(vla=str(trained[0]), state="estimated", estimator="default", device="cpu"))
    # refine=always: MPC's plan seeded by the candidates is one more candidate, judged alike
    policy = ImaginePolicy(ImagineConfig(vla=str(trained[0]), candidates=5, refine="always", device="cpu"))
    policy.reset(2, Scene.of(env))
    a = policy.act(obs)
    assert policy.last_info["candidates"].shape == (6, 8, 5)
    assert a.shape == ((1, 5) if policy.last_info["choice"] == 5 else (4, 5))
    # nothing may pass: refine plans the step with MPC, or the cheapest candidate is taken
    for refine, shape in (("rejected", (1, 5)), ("never", (4, 5))):
        policy = ImaginePolicy(ImagineConfig(vla=str(trained[0]), candidates=4, max_collision=-1.0, refine=refine,
                                             device="cpu"))
        policy.reset(2, Scene.of(env))
        a = policy.act(obs)
        assert a.shape == shape and "every candidate rejected" in policy.last_info["reason"]
        assert not policy.last_info["passed"].any()


def test_policy_names_parse_and_bad_ones_are_refused(trained):
    from policies import check_policy
    from policies.vla import ImagineConfig, vla_config

    cfg = vla_config(f"vla+imagine:{trained[0]},candidates=8,state=estimated,collision=2,refine=always")
    assert isinstance(cfg, ImagineConfig) and cfg.candidates == 8 and cfg.weights.collision == 2.0
    assert cfg.refine == "always"
    from robotworld.model.priors import PLANNING
    assert cfg.priors == PLANNING
    cfg = vla_config("vla+imagine,lift=false")
    assert not cfg.priors.lift and cfg.priors.empty_gripper and not cfg.priors.touch
    check_policy(f"vla:{trained[0]},execute=2")
    for name, match in (("vla:missing.pt", "does not exist"), ("vla,execute=x", "not a int"),
                        ("vla+imagine,nosuch=1", "expected FIELD=VALUE"), ("vla+imagine,lift=maybe", "not a bool")):
        with pytest.raises(ValueError, match=match):
            check_policy(name)


def test_cli_trains_a_policy_and_refuses_state_only_data(demos, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "robotworld.cli", *args], capture_output=True, text=True,
                              timeout=600)

    r = run("train", "policy", "--data", demos[0], "--out", str(tmp_path / "p"), "--steps", "2", "--batch-size", "4",
            "--device", "cpu", "--holdout-every", "8", "--json")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p" / "checkpoint.pt").exists()
    from policies import factory

    state_only = str(tmp_path / "state")
    collect(CollectConfig(task="reach", policy="expert", episodes=1, workers=1, out=state_only, progress=False),
            factory("expert"))
    r = run("train", "policy", "--data", state_only, "--out", str(tmp_path / "q"), "--steps", "2", "--device", "cpu")
    assert r.returncode != 0 and "camera frames" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q" / "checkpoint.pt").exists()


def test_torchrun_data_parallel_on_cpu(demos, tmp_path):
    """``train policy`` under torchrun: two processes, gloo on CPU, one checkpoint from rank 0."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29541", "-m", "robotworld.cli", "train", "policy", "--data", demos[0], "--out", str(tmp_path),
                          "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--holdout-every", "8",
                          "--device", "cpu", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert ckpt.read(tmp_path / "checkpoint.pt")["step"] == 4


def test_imagine_executes_what_hand_set_scores_prefer_and_rejects_a_collision(trained):
    """A scorer with hand-set outcomes: the cheapest chunk imagines a collision, so the next
    cheapest is executed; the choice and the reason come back in last_info."""
    from types import SimpleNamespace

    from policies.vla import ImagineConfig, ImaginePolicy
    from robotworld.planning.costs import Scores

    class HandSet:
        def score(self, obs, chunks, task, boxes=None, scale=None):
            c = torch.as_tensor(chunks)
            k, H = c.shape[:2]
            cost = -c[:, :, 0].sum(1)  # prefers the chunk that moves furthest along +x
            collision = torch.zeros(k, H)
            collision[int(cost.argmin()), 1] = 0.9
            im = SimpleNamespace(success=torch.zeros(k, H), grasp=torch.zeros(k, H), collision=collision,
                                 tool_pos=torch.zeros(k, H, 3))
            return Scores(cost, {"clearance": torch.full((k, H), float("inf"))}, im)

    env = _env("lift")
    obs, _ = env.reset(seed=4)
    policy = ImaginePolicy(ImagineConfig(vla=str(trained[0]), candidates=8, refine="never", device="cpu"))
    policy.scorer = HandSet()
    policy.reset(4, Scene.of(env))
    a = policy.act(obs)
    info = policy.last_info
    order = np.argsort(info["cost"])
    assert info["choice"] == order[1] and not info["passed"][order[0]]
    assert "collision 0.90" in info["rejected_because"][order[0]]
    np.testing.assert_array_equal(a, info["candidates"][order[1]][:4])
    # choose=first: imagination only vetoes; the VLA's first draw that passes is executed
    policy.cfg.choose = "first"
    policy.reset(4, Scene.of(env))
    policy.act(obs)
    info = policy.last_info
    assert info["choice"] == int(np.flatnonzero(info["passed"])[0]) and "first draw" in info["reason"]


def test_an_instruction_naming_an_absent_object_holds_the_arm(trained):
    from policies.vla import VLAPolicy, VLAPolicyConfig
    from sims.scene import COLOURS

    env = _env("lift")
    obs, _ = env.reset(seed=1)
    absent = next(c for c in COLOURS if c not in {o.colour for o in env.unwrapped.episode.objects})
    policy = VLAPolicy(VLAPolicyConfig(str(trained[0]), device="cpu"))
    policy.reset(1, Scene.of(env))
    a = policy.act({**obs, "instruction": f"pick up the {absent} cube"})
    assert a.shape == (1, 5) and not a[0, :4].any()
    assert "not in the scene" in policy.last_info["reason"]
    assert policy.act(obs).shape == (4, 5)  # the episode's own instruction: it acts


def test_paraphrases_replace_the_instruction_and_bad_files_are_refused(tmp_path):
    from policies import ZeroPolicy
    from robotworld.evaluation import EvalConfig, evaluate, read_paraphrases

    class Listening(ZeroPolicy):
        heard: list[str] = []

        def act(self, obs):
            self.heard.append(obs["instruction"])
            return super().act(obs)

    f = tmp_path / "p.txt"
    f.write_text("# unseen\nraise the {object} off the table\n\n")
    policy = Listening()
    evaluate(EvalConfig(task="lift", policy="zero", episodes=2, paraphrases=str(f), progress=False), policy,
             episode_length=3)
    assert policy.heard and all(h.startswith("raise the ") and h.endswith(" off the table") for h in policy.heard)
    assert "{" not in policy.heard[0]
    for text, match in (("go to the {place}\n", "expected only"), ("# nothing\n", "holds no template")):
        f.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_paraphrases(str(f))
    f.write_text("put it on the {target}\n")
    with pytest.raises(ValueError, match="does not have"):
        evaluate(EvalConfig(task="lift", policy="zero", episodes=1, paraphrases=str(f), progress=False), ZeroPolicy(),
                 episode_length=3)


def test_video_camera_extras_leave_the_policy_cameras_unchanged():
    """The floor, sky and fill light are the video camera's alone: a policy camera renders the
    same pixels after a video frame as before it, with the black void it was trained on."""
    from robotworld.overlay import draw, project

    env = _env("pick_place")
    obs, _ = env.reset(seed=0)
    phys = env.unwrapped.physics
    show = phys.render("showcase", 120, 160)
    assert show.shape == (120, 160, 3) and show[0].mean() > 100  # a sky, not a black void
    again = phys.render("front", SIZE, SIZE)
    np.testing.assert_array_equal(again, obs["image_front"])
    assert (again.reshape(-1, 3) == 0).all(-1).mean() > 0.05  # the black beyond the table, not the sky
    # the tool point projects into the video frame, and a drawn frame keeps its size
    uv, ok = project(env.unwrapped.world_state.tcp_pos[None], 480, 640)
    assert ok[0] and 0 < uv[0, 0] < 640 and 0 < uv[0, 1] < 480
    im = {"tool": np.tile(env.unwrapped.world_state.tcp_pos, (2, 3, 1)), "success": np.zeros((2, 3)),
          "grasp": np.zeros((2, 3)), "collision": np.ones((2, 3))}
    frame = draw(np.zeros((480, 640, 3), np.uint8), "lift the red cube", "step 0", {"imagined": im, "choice": 0})
    assert frame.shape == (480, 640, 3) and frame.any()


def test_training_phrasings_keep_the_slots_and_stay_apart_from_the_held_out_ones(demos):
    """Every simulator instruction is read back into its object and zone, its rewrites name
    them, none is a held-out phrasing, and training with --paraphrase draws them."""
    from pathlib import Path

    from robotworld.evaluation import read_paraphrases
    from robotworld.vla.phrasings import PHRASINGS, rewrites, slots
    from robotworld.vla.train import Demonstrations
    from sims.tasks import SAMPLERS, default_config, instruction_slots

    root = Path(__file__).resolve().parents[1] / "configs" / "paraphrases"
    for task, sample_episode in SAMPLERS.items():
        held_out = {t.format(object="{object}", target="{target}") for t in read_paraphrases(str(root / f"{task}.txt"))}
        assert not held_out & set(PHRASINGS[task]), task
        cfg = default_config(task)
        for seed in range(30):
            ep = sample_episode(np.random.default_rng(seed), cfg)
            assert slots(task, ep.instruction) == instruction_slots(task, ep), (task, ep.instruction)
            assert all(v in r for r in rewrites(task, ep.instruction) for v in instruction_slots(task, ep).values())
    assert slots("lift", "do a little dance") is None and rewrites("lift", "do a little dance") == []

    plain = Demonstrations(demos, 8, 0, 8, "train")
    mixed = Demonstrations(demos, 8, 0, 8, "train", paraphrase=0.5)
    langs = [mixed.sample(16, torch.device("cpu"))["lang"] for _ in range(4)]
    own = {tuple(np.round(v, 5)) for opts in plain._lang.values() for v in opts}
    drawn = {tuple(np.round(v, 5)) for b in langs for v in b.numpy()}
    assert drawn - own, "no rewrite was drawn at paraphrase=0.5"
    assert drawn & own, "the episodes' own phrasings should still be drawn"
    with pytest.raises(ValueError, match="probability"):
        Demonstrations(demos, 8, 0, 8, "train", paraphrase=1.5)

