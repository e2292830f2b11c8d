"""Planner invariants on a quadratic toy problem, and the world-model cost wiring."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from robotworld.planning import Planner, PlannerConfig
from robotworld.policy import Scene

TARGET = torch.tensor([0.3, -0.6, 0.9])


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """(H, S, A) -> (S,): distance of every step to a fixed target."""
    return ((x - TARGET) ** 2).sum((0, 2))


def _planner(method: str, **kw) -> Planner:
    cfg = PlannerConfig(method=method, horizon=8, samples=256, iterations=kw.pop("iterations", 6), elites=32,
                        action_rate=0.0, **kw)
    return Planner(quadratic, -torch.ones(3), torch.ones(3), cfg)


@pytest.mark.parametrize("method", ["mppi", "cem"])
def test_both_methods_solve_the_quadratic_and_cost_falls(method):
    finals = []
    for seed in range(5):
        costs = [float(quadratic(_planner(method, iterations=it, seed=seed).plan()[:, None])) for it in (1, 2, 4, 8)]
        assert costs == sorted(costs, reverse=True) and costs[-1] < 0.1 * costs[0], costs
        finals.append(costs[-1])
    assert float(np.median(finals)) < 0.1, finals  # from about 3.4 at the start (all zeros)


@pytest.mark.parametrize("method", ["mppi", "cem"])
def test_actions_stay_inside_bounds(method):
    cfg = PlannerConfig(method=method, horizon=6, samples=128, iterations=4, elites=16, init_std=3.0, action_rate=0.0)
    far = lambda x: ((x - 5.0) ** 2).sum((0, 2))  # noqa: E731 - optimum far outside the box
    p = Planner(far, -torch.ones(2), 0.5 * torch.ones(2), cfg)
    seen = []
    p.cost = lambda x: (seen.append(x.clone()), far(x))[1]
    a = p.plan()
    assert (a >= -1).all() and (a <= 0.5).all()
    assert all((x >= -1).all() and (x <= 0.5).all() for x in seen)
    torch.testing.assert_close(a, torch.full_like(a, 0.5), atol=0.1, rtol=0)


def test_warm_start_is_the_shifted_previous_mean():
    p = _planner("mppi")
    first = p.plan()
    expected = torch.cat((first[1:], first[-1:]), 0)
    torch.testing.assert_close(p.warm_start(), expected)
    seen = []
    p.cost = lambda x: (seen.append(x[:, 0].clone()), quadratic(x))[1]
    p.plan()
    torch.testing.assert_close(seen[0], expected)  # the first sample scored is the warm start


def test_priors_are_scored_and_non_finite_samples_dropped():
    p = _planner("cem")
    good = TARGET.expand(8, 3).clamp(-1, 1)[None]
    bad_cost = lambda x: torch.where(x[0, :, 0] > 0.9, torch.nan, quadratic(x))  # noqa: E731
    p.cost = bad_cost
    a = p.plan(prior_chunks=good)
    assert torch.isfinite(a).all() and p.stats["dropped_samples"] > 0
    assert float(quadratic(a[:, None])) < 0.05


def test_prior_chunks_of_any_length_are_cut_or_held_to_the_horizon():
    """A policy's chunk shorter than the horizon is held at its last action; a longer one is
    cut; either is scored as the first samples after the mean."""
    from robotworld.planning.planner import fit_horizon

    chunk = torch.arange(3 * 2, dtype=torch.float32).view(1, 3, 2)
    held = fit_horizon(chunk, 5)
    assert held.shape == (1, 5, 2) and torch.equal(held[0, 3:], chunk[0, -1:].expand(2, 2))
    assert torch.equal(fit_horizon(chunk, 2), chunk[:, :2])
    p = _planner("cem")
    seen = []
    p.cost = lambda x: (seen.append(x.clone()), quadratic(x))[1]
    for T in (3, 8, 20):
        seen.clear()
        short = TARGET.clamp(-1, 1).expand(1, T, 3)
        p.plan(prior_chunks=short)
        torch.testing.assert_close(seen[0][:, 1], fit_horizon(short, 8)[0])  # after the mean


def test_scorer_ranks_chunks_by_their_imagined_outcomes():
    """The scoring service: an observation and k chunks of any length in, a cost per chunk and
    per-step terms by name out. On reach, chunks towards the goal beat chunks away from it; a
    chunk driven into an obstacle box is charged and its clearance goes negative; the cost is the
    planner's own (WorldModelCost on the same observation)."""
    import sims
    from robotworld.model import load
    from robotworld.planning.costs import ActionScale, Scorer, WorldModelCost

    wm = load("default")
    env = sims.make("reach")
    obs, _ = env.reset(seed=5)
    tool, goal = obs["proprio"][15:18], obs["goal"]
    step = (goal - tool) / np.linalg.norm(goal - tool)
    scorer = Scorer(wm)
    for H in (1, 4, 12):
        chunks = np.zeros((3, H, 5), np.float32)
        chunks[0, :, :3], chunks[1, :, :3], chunks[:, :, 4] = step, -step, 1.0  # towards, away, still
        s = scorer.score(obs, chunks, "reach", scale=ActionScale.of(env))
        assert s.cost.shape == (3,) and s.best == 0, s.cost
        assert {"reward", "success", "collision", "progress", "table", "clearance"} <= set(s.terms)
        assert all(v.shape == (3, H) for v in s.terms.values())
        assert s.imagined.success.shape == (3, H) and s.imagined.tool_pos.shape == (3, H, 3)
        assert torch.isinf(s.terms["clearance"]).all()  # no obstacles given
    cost = WorldModelCost(wm)
    cost.set_scene(None, ActionScale.of(env))
    cost.observe(obs, "reach")
    torch.testing.assert_close(s.cost, cost(torch.as_tensor(chunks).transpose(0, 1)))
    # an obstacle right under the tool: the chunk that goes down into it is charged
    down = np.zeros((2, 6, 5), np.float32)
    down[0, :, 2] = -1.0
    box = [[tool[0], tool[1], tool[2] - 0.12, 0.03, 0.03, 0.03]]
    s = scorer.score(obs, down, "reach", boxes=box)
    assert s.terms["obstacle"][0].sum() > 0 and s.terms["obstacle"][1].sum() == 0
    assert s.terms["clearance"][0].min() < 0 < s.terms["clearance"][1].min()
    with pytest.raises(ValueError, match=r"expected \(k, H, 5\)"):
        scorer.score(obs, np.zeros((2, 4, 3)), "reach")
    with pytest.raises(ValueError, match="NaN"):
        scorer.score(obs, np.full((2, 4, 5), np.nan), "reach")
    with pytest.raises(ValueError, match="expected finite"):
        scorer.score(obs, down, "reach", boxes=[[0.5, 0, 0, 0.1]])


def test_the_switch_dimension_can_flip_where_the_noise_never_reaches():
    """A cost that pays only for a gripper held open over the whole horizon, from a mean that
    keeps it closed and noise too small to reach across: only the switch proposals find it."""
    def open_all_along(x):  # (H, S, A) -> (S,)
        return 1.0 - (x[..., 2] > 0.9).all(0).float() + 0.01 * (x[..., :2] ** 2).sum((0, 2))

    for switch, to, opened in ((-1, "both", False), (2, "both", True), (2, "high", True), (2, "low", False)):
        cfg = PlannerConfig(horizon=6, samples=64, iterations=3, elites=8, init_std=0.05, action_rate=0.0,
                            switch_dim=switch, switch_to=to)
        p = Planner(open_all_along, -torch.ones(3), torch.ones(3), cfg)
        p._mean[..., 2] = -1.0  # closed
        a = p.plan()
        assert bool((a[:, 2] > 0.9).all()) == opened, a
    with pytest.raises(ValueError, match="switch_to = 'open'"):
        PlannerConfig(switch_dim=2, switch_to="open")
    with pytest.raises(ValueError, match="switch_dim = 3, but actions have 3"):
        Planner(open_all_along, -torch.ones(3), torch.ones(3), PlannerConfig(samples=64, elites=8, switch_dim=3)).plan()


def test_a_snapped_switch_is_executed_at_a_bound_while_the_search_keeps_its_mean():
    """switch_snap: the returned plan has the switch at its high bound where the refined mean is
    at or above the threshold and at its low bound below; the warm start is the mean's, and the
    action-rate penalty starts from the action returned."""
    def half_closed(x):  # (H, S, A) -> (S,): best with the switch at -0.3 and the rest at TARGET
        return ((x[..., 2] + 0.3) ** 2).sum(0) + ((x[..., :2] - TARGET[:2]) ** 2).sum((0, 2))

    cfg = dict(horizon=6, samples=256, iterations=4, elites=16, action_rate=0.0, switch_dim=2, seed=0)
    mean_plan = Planner(half_closed, -torch.ones(3), torch.ones(3), PlannerConfig(**cfg)).plan()
    assert (mean_plan[:, 2] - (-0.3)).abs().max() < 0.3, mean_plan  # between -0.6 and 0
    for threshold, side in ((0.0, -1.0), (-0.9, 1.0)):
        p = Planner(half_closed, -torch.ones(3), torch.ones(3),
                    PlannerConfig(**cfg, switch_snap=True, switch_threshold=threshold))
        a = p.plan()
        assert torch.equal(a[:, 2], torch.full((6,), side)), a
        torch.testing.assert_close(a[:, :2], mean_plan[:, :2])  # same search, same samples
        torch.testing.assert_close(p.mean, mean_plan)  # the search keeps the mean
        assert torch.equal(p.last_action, a[0])
    with pytest.raises(ValueError, match="switch_snap = True needs a switch_dim"):
        PlannerConfig(switch_snap=True)


def test_impossible_configs_are_refused():
    with pytest.raises(ValueError, match="elites = 64 is more than samples = 32"):
        PlannerConfig(samples=32, elites=64)
    with pytest.raises(ValueError, match="samples = 0"):
        PlannerConfig(samples=0)
    with pytest.raises(ValueError, match="method"):
        PlannerConfig(method="random-shooting")
    p = _planner("mppi")
    p.cost = lambda x: torch.full((x.shape[1],), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        p.plan()


def test_world_model_cost_plans_with_the_shipped_model():
    import sims
    from robotworld.model import load
    from robotworld.planning import WorldModelCost

    wm = load("default")
    env = sims.make("reach")
    obs, _ = env.reset(seed=0)
    cost = WorldModelCost(wm)
    cost.observe(obs, "reach")
    p = Planner(cost, env.action_space.low, env.action_space.high,
                PlannerConfig(horizon=8, samples=128, iterations=3, elites=16))
    a = p.plan()
    assert a.shape == (8, 5) and (a.abs() <= 1).all()
    with pytest.raises(ValueError, match="world model takes 5"):
        cost(torch.zeros(8, 4, 8))


def test_lean_imagination_matches_imagine():
    """The planner's lean view (first object, time-major) is the one path's numbers, also with
    one start per sequence instead of one shared."""
    import sims
    from robotworld.model import load

    wm = load("default")
    env = sims.make("pick_place")
    obs, _ = env.reset(seed=1)
    s = wm.encode(obs, task="pick_place")
    x = torch.rand(12, 64, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (H, S, A)
    with torch.no_grad():
        full = wm.imagine(s, x.transpose(0, 1))
        lean = wm.imagine(s, x, objects="first", time_major=True)
        many = {k: np.repeat(np.asarray(v)[None], 64, 0) for k, v in obs.items() if k != "instruction"}
        per_sample = wm.imagine(wm.encode(dict(many, instruction=[obs["instruction"]] * 64), task="pick_place"),
                                x, objects="first", time_major=True)
    for name in ("reward", "success", "collision", "grasp"):
        torch.testing.assert_close(getattr(lean, name), getattr(full, name).T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lean.last, full.last, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lean.tool_pos, full.tool_pos.transpose(0, 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lean.object_pos[..., 0, :], full.object_pos[:, :, 0].transpose(0, 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(per_sample.reward, lean.reward, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(per_sample.collision, lean.collision, atol=1e-6, rtol=1e-5)


def _closed_empty_gripper_plans():
    """The shipped model, the start of a lift episode with the gripper closed on nothing, and
    64 plans of 12 steps (H, S, A): the first 32 keep the gripper closed, the others open it for
    three steps, then close it."""
    import sims
    from robotworld.model import load
    from robotworld.model.world_model import FINGER

    wm = load("default")
    env = sims.make("lift")
    obs, _ = env.reset(seed=1)
    obs = dict(obs, proprio=obs["proprio"].copy())
    obs["proprio"][FINGER] = 0.0  # closed on nothing
    x = torch.rand(12, 64, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[:, :32, 4] = -1.0
    x[:, 32:, 4] = torch.where(torch.arange(12)[:, None] < 3, 1.0, -1.0)
    return wm, wm.encode(obs, task="lift"), x


def test_a_closed_empty_gripper_grasps_nothing_until_it_opens():
    """The gripper gates: from a closed, empty gripper at the cube, a plan that keeps it
    closed is imagined holding nothing and the cube not rising; one that opens first may grasp.
    Without the empty-gripper prior, grasp is only ever higher."""
    import dataclasses

    from robotworld.model.priors import DEFAULT

    wm, s, x = _closed_empty_gripper_plans()
    with torch.no_grad():
        lean = wm.imagine(s, x, objects="first", time_major=True, priors=DEFAULT)
        ungated = wm.imagine(s, x, objects="first", time_major=True,
                             priors=dataclasses.replace(DEFAULT, empty_gripper=False))
    assert lean.grasp[:, :32].max() < 1e-3
    rise = lean.object_pos[:, :32, 0, 2] - s.objects[0, 0, 2]
    assert rise.max() <= DEFAULT.lift_free + 1e-6
    assert (lean.grasp <= ungated.grasp + 1e-6).all()


def test_lift_gate_holds_an_unheld_object_to_a_nudge():
    """Beyond LIFT_FREE up and CARRY_FREE across, an object moves only as far as it is grasped."""
    from robotworld.model.priors import DEFAULT, lift_gate

    CARRY_FREE, LIFT_FREE = DEFAULT.carry_free, DEFAULT.lift_free

    start = torch.tensor([[0.5, 0.0, 0.02]])
    moved = torch.tensor([[0.6, 0.0, 0.12], [0.503, 0.003, 0.025], [0.5, -0.2, 0.02]])  # far, a nudge, far
    free = lift_gate(moved, start, torch.zeros(3))
    torch.testing.assert_close(free[0], torch.tensor([0.5 + CARRY_FREE, 0.0, 0.02 + LIFT_FREE]))
    torch.testing.assert_close(free[1], moved[1])  # within both allowances: unchanged
    torch.testing.assert_close(free[2], torch.tensor([0.5, -CARRY_FREE, 0.02]))
    torch.testing.assert_close(lift_gate(moved, start, torch.ones(3)), moved)  # held: moves freely
    half = lift_gate(moved[:1], start, torch.tensor([0.5]))[0]
    torch.testing.assert_close(half, torch.tensor([0.5 + CARRY_FREE + 0.5 * (0.1 - CARRY_FREE), 0.0,
                                                   0.02 + LIFT_FREE + 0.5 * (0.1 - LIFT_FREE)]))


def test_gripper_gate_cases():
    """gripper_admits on hand-made steps: holding at the start passes; an empty gripper passes
    only once it closes, after having been open the step before, with the tool centred where
    that step starts and where it ends (the centring prior; without it, off-centre closes pass)."""
    import dataclasses

    from robotworld.model.priors import DEFAULT, gripper_admits

    H = 5
    obj = torch.zeros(1, H, 3)
    above, centre = [0.0, 0.0, 0.03], [0.0, 0.0, 0.005]
    centred_from_2 = torch.tensor([above] * 2 + [centre] * 3)[None]
    closed, opens_at_1 = torch.full((1, H), -1.0), torch.tensor([[-1.0, 1.0, 1.0, -1.0, -1.0]])

    def gate(finger, grip, tool, start=above, p=DEFAULT):  # batch-first (1, H) in, (H,) out
        return gripper_admits(torch.tensor([finger]), grip.T, tool.transpose(0, 1), obj.transpose(0, 1),
                              torch.tensor([start]), p)[:, 0]

    assert gate(0.0, closed, centred_from_2).max() < 1e-3  # closed on nothing, never opened
    g = gate(0.0, opens_at_1, centred_from_2)  # opens at step 1, centred from step 2, closes at 3
    assert g[:3].max() < 1e-3 and g[3:].min() > 0.98
    assert gate(0.08, closed, centred_from_2 + 0.03).max() < 1e-3  # open, never centred
    assert gate(0.08, closed, torch.tensor([centre] * H)[None], start=centre).min() > 0.98  # open, centred, closes
    assert gate(0.04, closed, centred_from_2 + 0.1).min() > 0.99  # closed on a 4 cm object
    # closed 2.5 cm above the centre, then slid down onto it while closed: the fingers shut
    # within the first step, so no grasp
    assert gate(0.08, closed, centred_from_2).max() < 1e-3
    # open until the centre is reached at the end of step 2, closing during that same step: no
    assert gate(0.0, torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0]]), centred_from_2).max() < 1e-3
    # centred only while open (steps 1-2), then off by 3 cm when it closes: no grasp
    passes_over = torch.tensor([above] + [centre] * 2 + [[0.03, 0.0, 0.005]] * 2)[None]
    assert gate(0.0, torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0]]), passes_over).max() < 1e-3
    assert gate(0.0, torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]]), centred_from_2).max() < 1e-3  # never closes
    # without the centring prior, the close 3 cm off centre passes
    uncentred = dataclasses.replace(DEFAULT, centring=False)
    assert gate(0.0, torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0]]), passes_over, p=uncentred)[3:].min() > 0.98


def test_gripper_gate_opening_matches_the_robot():
    from robotworld.model.priors import FINGER_MAX_OPENING
    from sims import robot

    assert FINGER_MAX_OPENING == 2 * robot.FINGER_MAX


def test_bench_planner_reports_latency_and_flops(capsys):
    from robotworld.bench import PlannerBenchConfig, bench_planner

    out = bench_planner(PlannerBenchConfig(task="reach", plans=1))
    for k in ("plan_ms_p50", "plan_ms_p95", "plan_ms_p95_512x16x6", "plan_ms_p95_256x8x4", "flops_fraction"):
        assert out[k] > 0
    small = bench_planner(PlannerBenchConfig(task="reach", plans=1, settings="64x4x2"))
    assert small["plan_ms_p95"] == small["plan_ms_p95_64x4x2"] > 0
    with pytest.raises(ValueError, match="SAMPLESxHORIZONxITERATIONS"):
        bench_planner(PlannerBenchConfig(task="reach", plans=1, settings="1024x16"))


def test_mpc_policy_takes_planner_settings_after_the_checkpoint():
    from policies import make_policy

    pol = make_policy("mpc:default,samples=64,horizon=4,iterations=2,method=cem,collision=0,value=0.5", seed=3)
    cfg = pol.planner_cfg
    assert (cfg.samples, cfg.horizon, cfg.iterations, cfg.method, cfg.seed) == (64, 4, 2, "cem", 3)
    assert (pol.cost.w.collision, pol.cost.w.value, pol.cost.w.reward) == (0.0, 0.5, 1.0)
    # the gripper is the switch, executed at a bound on the side the world model reads
    assert (cfg.switch_dim, cfg.switch_snap, cfg.switch_threshold) == (4, True, 0.25)
    assert not make_policy("mpc:default,switch_snap=false").planner_cfg.switch_snap
    assert not make_policy("mpc:default,switch_dim=-1").planner_cfg.switch_snap
    with pytest.raises(ValueError, match="FIELD=VALUE with FIELD preset, device or one of"):
        make_policy("mpc:default,sample=64")
    # priors and cost weights by name after a preset's name, as the ablations spell them
    pol = make_policy("mpc-fast,touch=false,centring=0,push=0")
    assert not pol.cost.priors.touch and not pol.cost.priors.centring and pol.cost.priors.lift
    assert pol.cost.w.push == 0 and pol.planner_cfg.samples == 128
    with pytest.raises(ValueError, match="is not a bool"):
        make_policy("mpc-fast,touch=maybe")
    with pytest.raises(ValueError, match="device = 'gpu': expected auto, cpu, cuda or cuda:N"):
        make_policy("mpc-fast,device=gpu")
    with pytest.raises(ValueError, match="is not a int"):
        make_policy("mpc:default,samples=many")


def test_planner_presets_set_the_search_sizes_and_fields_beside_them_win():
    from policies import make_policy
    from robotworld.planning import PLANNER_PRESETS, PlannerConfig, planner_config

    full = PlannerConfig()
    assert {k: getattr(full, k) for k in PLANNER_PRESETS["full"]} == PLANNER_PRESETS["full"]
    fast = planner_config("fast", method="cem")
    assert (fast.samples, fast.horizon, fast.iterations, fast.elites, fast.method) == (128, 8, 3, 64, "cem")
    with pytest.raises(ValueError, match="planner preset 'quick': expected one of full, fast"):
        planner_config("quick")
    pol = make_policy("mpc-fast", seed=2)
    assert (pol.planner_cfg.samples, pol.planner_cfg.horizon, pol.planner_cfg.iterations) == (128, 8, 3)
    assert pol.planner_cfg.switch_to == "high" and pol.planner_cfg.seed == 2
    pol = make_policy("mpc:default,preset=fast,horizon=12,collision=0")
    assert (pol.planner_cfg.samples, pol.planner_cfg.horizon, pol.cost.w.collision) == (128, 12, 0.0)
    with pytest.raises(ValueError, match="expected a planner preset, one of full, fast"):
        make_policy("mpc:default,preset=quick")


def test_mpc_reaches_the_goal_in_closed_loop():
    """The shipped model and planner succeed on reach in MuJoCo (seeded, so reproducible)."""
    from robotworld.cli import eval_policy
    from robotworld.evaluation import EvalConfig, evaluate

    cfg = EvalConfig(task="reach", policy="mpc:default,samples=256,horizon=8,iterations=4", episodes=4, seed=0)
    res = evaluate(cfg, eval_policy(cfg))
    assert res.success_rate >= 0.75, res


def test_batched_evaluation_plans_many_episodes_at_once_and_repeats_itself():
    """Five reach episodes, three at a time in one batched plan a step: they succeed as the
    one-at-a-time evaluation does, and a second run gives the same figures."""
    from robotworld.cli import eval_policy
    from robotworld.evaluation import EvalConfig, as_dict, evaluate

    cfg = EvalConfig(task="reach", policy="mpc:default,samples=128,horizon=8,iterations=3", episodes=5, seed=0,
                     batch=3, progress=False)
    first = as_dict(evaluate(cfg, eval_policy(cfg)))
    assert first["success_rate"] >= 0.8 and first["seeds"] == [0, 4] and first["episodes"] == 5, first
    assert [r["seed"] for r in first["per_episode"]] == list(range(5))  # in seed order, not finish order
    assert sum(r["success"] for r in first["per_episode"]) == round(first["success_rate"] * 5)
    assert as_dict(evaluate(cfg, eval_policy(cfg))) == first
    expert = EvalConfig(task="reach", policy="expert", episodes=2, batch=2)
    with pytest.raises(ValueError, match="batched evaluation needs an MPC policy"):
        evaluate(expert, eval_policy(expert))


def test_progress_cost_points_the_way_where_the_reward_is_flat():
    """Far from the goal the imagined reward is flat; the distance still to go is not."""
    import sims
    from robotworld.model import load
    from robotworld.planning import CostWeights, WorldModelCost

    wm = load("default")
    env = sims.make("reach")
    obs, _ = env.reset(seed=5)
    tool, goal = obs["proprio"][15:18], obs["goal"]
    step = torch.as_tensor((goal - tool) / np.linalg.norm(goal - tool), dtype=torch.float32)
    towards = torch.cat((step, torch.tensor([0.0, 1.0])))
    away = torch.cat((-step, torch.tensor([0.0, 1.0])))
    x = torch.stack((towards, away))[None].expand(3, 2, 5).contiguous()  # (H, S, A)
    cost = WorldModelCost(wm, CostWeights(reward=0, success=0, value=0, collision=0, progress=1))
    cost.observe(obs, "reach")
    from robotworld.planning.costs import to_go as distance_to_go

    start = cost.situation.start
    to_go = distance_to_go(wm.imagine(start, x, objects="first", time_major=True), start.goal, "reach")
    assert (to_go[:, 0] < to_go[:, 1]).all(), to_go
    c = cost(x)
    assert c[0] < c[1] - 0.1, c


def test_rollout_equals_stepping_next_and_is_differentiable():
    import sims
    from robotworld.model import load

    wm = load("default")
    env = sims.make("lift")
    obs, _ = env.reset(seed=2)
    start = wm.encode(obs, task="lift")
    z0, temb = start.latent.detach(), start.task.detach()
    x = torch.rand(6, 3, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (H, B, A)
    with torch.no_grad():
        zs = wm.rollout(z0, x, temb)
        z, stepped = z0.expand(3, -1), []
        for t in range(6):
            z = wm.next(z, x[t], temb.expand(3, -1))
            stepped.append(z)
    torch.testing.assert_close(zs, torch.stack(stepped), atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # written into a buffer: the same numbers, in the buffer given
        buf = torch.full((6, 3, wm.cfg.latent_dim), float("nan"))
        assert wm.rollout(z0, x, temb, out=buf) is buf
    assert torch.equal(buf, zs)
    x.requires_grad_(True)
    wm.rollout(z0, x, temb).sum().backward()  # no in-place activation where gradients flow
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # imagine() with gradients (stacked latents) and without (the buffer) agree exactly
    acts = x.detach().transpose(0, 1)
    with torch.no_grad():
        plain = wm.imagine(start, acts)
    traced = wm.imagine(start, acts.clone().requires_grad_(True))
    for a, b in zip(plain, traced):
        assert torch.equal(a, b.detach())


def test_a_batch_of_environments_plans_each_to_its_own_target():
    targets = torch.tensor([[0.3, -0.6, 0.9], [-0.8, 0.2, 0.0], [0.5, 0.5, -0.5]])  # (E, A)
    S = 256

    def per_env(x):  # (H, E * S, A) -> (E * S,): env e's samples towards targets[e]
        return ((x - targets.repeat_interleave(S, 0)) ** 2).sum((0, 2))

    for method in ("mppi", "cem"):
        cfg = PlannerConfig(method=method, horizon=8, samples=S, iterations=8, elites=32, action_rate=0.0)
        p = Planner(per_env, -torch.ones(3), torch.ones(3), cfg, envs=3)
        a = p.plan()
        assert a.shape == (3, 8, 3) and (a.abs() <= 1).all()
        torch.testing.assert_close(a, targets[:, None].expand(3, 8, 3), atol=0.2, rtol=0)
        torch.testing.assert_close(p.warm_start(), torch.cat((a[:, 1:], a[:, -1:]), 1))
        p.reset_env(1)
        assert (p.mean[1] == 0).all() and (p.mean[0] == a[0]).all()
    with pytest.raises(ValueError, match=r"expected \(3, K, T, 3\)"):
        p.plan(prior_chunks=torch.zeros(2, 8, 3))
    with pytest.raises(ValueError, match="envs = 0"):
        Planner(per_env, -torch.ones(3), torch.ones(3), cfg, envs=0)


def test_one_environment_in_a_batch_plans_as_the_single_planner_does():
    cfg = PlannerConfig(horizon=8, samples=256, iterations=4, elites=32)
    single = Planner(quadratic, -torch.ones(3), torch.ones(3), cfg)
    batch = Planner(quadratic, -torch.ones(3), torch.ones(3), cfg, envs=1)
    prior = TARGET.expand(8, 3)[None]
    for _ in range(3):
        torch.testing.assert_close(batch.plan(prior[None])[0], single.plan(prior), rtol=0, atol=0)


def test_world_model_cost_scores_a_batch_of_environments_as_each_alone():
    import sims
    from robotworld.model import load
    from robotworld.planning import WorldModelCost
    from robotworld.planning.costs import stack_observations

    wm = load("default")
    env = sims.make("lift")
    obs = [env.reset(seed=s)[0] for s in range(3)]
    batch = stack_observations(obs)
    S = 32
    x = torch.rand(8, 3 * S, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cost = WorldModelCost(wm)
    cost.observe(batch, "lift")
    together = cost(x)
    for e, o in enumerate(obs):
        cost.observe(o, "lift")
        torch.testing.assert_close(together[e * S:(e + 1) * S], cost(x[:, e * S:(e + 1) * S]), rtol=1e-5, atol=1e-5)
    cost.observe(batch, "lift")
    with pytest.raises(ValueError, match="do not split evenly over the 3"):
        cost(x[:, :50])


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_iteration_plans_as_the_eager_one():
    """With compile, one refinement is compiled whole (fullgraph: nothing leaves the device, so
    on a GPU it is one CUDA graph); it plans the same sequence as the eager planner."""
    import sims
    from robotworld.model import load
    from robotworld.planning import WorldModelCost

    wm = load("default")
    env = sims.make("lift")
    obs, _ = env.reset(seed=0)
    cost = WorldModelCost(wm)
    cost.observe(obs, "lift")
    cfg = dict(horizon=3, samples=64, iterations=2, elites=8)
    eager = Planner(cost, env.action_space.low, env.action_space.high, PlannerConfig(**cfg))
    compiled = Planner(cost, env.action_space.low, env.action_space.high, PlannerConfig(**cfg, compile=True))
    # The compiled kernels sum in another order than eager's (and differently again on an AVX-512
    # host), and a plan's softmax weights amplify a cost's last-bit differences: on six lift
    # seeds the first plans agreed to 1.2e-5 and the second, warm-started from the first, to
    # 1.6e-4 (a 2026-11-30 AVX-512 host). A compiled plan that went wrong differs by tenths.
    for atol in (1e-4, 1e-3):
        torch.testing.assert_close(compiled.plan(), eager.plan(), rtol=0, atol=atol)


def _over_the_cube(seed: int = 3):
    """A lift environment and its observation once the expert's tool has come down to 4.5 cm
    over the cube."""
    import sims
    from policies import make_policy

    env = sims.make("lift")
    obs, _ = env.reset(seed=seed)
    expert = make_policy("expert")
    expert.reset(seed, Scene.of(env))
    while obs["proprio"][17] > 0.045:
        obs, *_ = env.step(expert.act(obs)[0])
    return env, obs


def test_collision_floor_leaves_a_grasp_height_alone_and_charges_a_contact():
    """Only collision probability above the floor is charged: from the expert's approach over
    a cube, coming down to the cube's centre costs nothing with the floor (and something
    without), driving on into the table costs about a step per step; the floor lies in [0, 1)."""
    from robotworld.model import load
    from robotworld.planning import CostWeights, WorldModelCost

    wm = load("default")
    env, obs = _over_the_cube()
    x = torch.zeros(8, 2, 5)
    x[..., 4] = 1.0  # gripper open
    for k, height in enumerate((0.02, -0.02)):  # the cube's centre; 2 cm into the table
        x[:3, k, 2] = float(np.clip((height - obs["proprio"][17]) / 0.09, -1, 1))
    charged = {}
    for floor in (0.0, 0.25):
        cost = WorldModelCost(wm, CostWeights(reward=0, success=0, value=0, progress=0, collision=1,
                                              collision_floor=floor, push=0))
        cost.observe(obs, "lift")
        charged[floor] = cost(x)
    assert charged[0.25][0] == 0 < charged[0.0][0], charged
    assert charged[0.25][1] > 3.0, charged
    with pytest.raises(ValueError, match="collision_floor"):
        CostWeights(collision_floor=1.0)


def test_mpc_with_fewer_samples_than_the_default_elites():
    """samples below the default 64 elites: the policy keeps them all as elites; elites asked
    for explicitly above the samples are still refused."""
    from policies import make_policy

    assert make_policy("mpc:default,samples=32").planner_cfg.elites == 32
    assert make_policy("mpc:default,samples=256").planner_cfg.elites == 64
    with pytest.raises(ValueError, match="elites = 64 is more than samples = 32"):
        make_policy("mpc:default,samples=32,elites=64")


def test_gripper_clearance_covers_the_gripper_boxes_mujoco_measures():
    """The spheres' clearance to an obstacle box never exceeds MuJoCo's distance between the
    gripper's own boxes (hand, two fingers; sims.robot) and that box, is never positive where
    they touch, and is at most 2.5 cm short of it."""
    import math

    import mujoco

    from robotworld.planning.costs import gripper_clearance
    from sims import robot
    from sims.control import down_rotation

    d_ = robot.PANDA
    (hx, hy, hz), (fx, fy, fz) = d_.hand_half, d_.finger_half
    boxes = "".join(f'<body mocap="true"><geom type="box" size="{a} {b} {c}" contype="0" conaffinity="0"/></body>'
                    for a, b, c in ((hx, hy, hz), (fx, fy, fz), (fx, fy, fz), (0.02, 0.02, 0.02)))
    m = mujoco.MjModel.from_xml_string(f"<mujoco><worldbody>{boxes}</worldbody></mujoco>")
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    exact, ours = [], []
    for _ in range(400):
        tool = np.array([0.5, 0.0, 0.05]) + rng.uniform(-0.12, 0.12, 3) * [1, 1, 0.5]
        yaw, q = rng.uniform(-math.pi, math.pi), rng.uniform(0, robot.FINGER_MAX)
        half = np.array([rng.uniform(0.015, 0.03), rng.uniform(0.015, 0.03), rng.uniform(0.02, 0.04)])
        centre = np.array([0.5 + rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), half[2]])
        rot = down_rotation(yaw)
        origin = tool - rot @ [0, 0, robot.TCP_OFFSET]  # the hand frame, TCP_OFFSET above the tool point
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, rot.ravel())
        for k, p in enumerate((origin + rot @ [0, 0, hz], origin + rot @ [0, fy + q, d_.finger_base_z + fz],
                               origin + rot @ [0, -(fy + q), d_.finger_base_z + fz], centre)):
            d.mocap_pos[k], d.mocap_quat[k] = p, quat if k < 3 else [1, 0, 0, 0]
        m.geom_size[3] = half
        mujoco.mj_forward(m, d)
        exact.append(min(mujoco.mj_geomDistance(m, d, g, 3, 1.0, np.zeros(6)) for g in range(3)))
        box = torch.tensor([[*centre, *half]], dtype=torch.float32)
        ours.append(gripper_clearance(torch.tensor(tool, dtype=torch.float32), torch.tensor(yaw), torch.tensor(q),
                                      box).item())
    exact, ours = np.array(exact), np.array(ours)
    apart, near = exact > 0, exact < 0.1
    assert (exact <= 0).sum() > 20 and apart.sum() > 100  # both cases drawn
    assert (ours[apart] <= exact[apart] + 1e-4).all()  # a cover: never farther than the boxes
    assert (ours[exact <= 0] <= 0).all()  # every touch seen
    assert (ours[apart & near] >= exact[apart & near] - 0.025).all()


def test_obstacle_cost_charges_a_plan_into_a_box_and_follows_each_environment():
    import sims
    from policies import make_policy
    from robotworld.model import load
    from robotworld.planning import CostWeights, WorldModelCost
    from robotworld.planning.costs import stack_observations

    env = sims.make("pick_place_clutter")
    obs, _ = env.reset(seed=0)
    pol = make_policy("mpc:default,samples=32,horizon=4,iterations=1")
    pol.reset(0, Scene.of(env))
    want = [[*o.pos, *o.half] for o in env.unwrapped.episode.obstacles]
    torch.testing.assert_close(pol.cost.boxes, torch.tensor(want, dtype=torch.float32))
    from robotworld.planning.costs import ActionScale

    cost = WorldModelCost(load("default"), CostWeights(reward=0, success=0, value=0, collision=0, progress=0,
                                                       push=0))
    cost.observe(obs, "pick_place_clutter")
    tool = obs["proprio"][15:18]
    x = torch.zeros(8, 2, 5)
    x[:, 0, 2] = -1.0  # straight down, 3 cm a step, from 46 cm up; the other stays
    box_below = [tool[0], tool[1], tool[2] - 0.16, 0.03, 0.03, 0.03]  # top 13 cm under the tool point
    cost.set_scene([box_below], ActionScale.of(env))
    down, stay = cost(x).tolist()
    assert down > 1.0 and stay == 0.0, (down, stay)
    cost.set_scene(None)
    assert cost(x).abs().max() == 0
    # two environments: each sequence is charged against its own environment's obstacles
    cost.observe(stack_observations([obs, obs]), "pick_place_clutter")
    far = [2.0, 2.0, 0.03, 0.03, 0.03, 0.03]
    cost.set_scene([[box_below], [far]])
    both = cost(torch.cat((x, x), 1)).tolist()
    assert both[0] == pytest.approx(down, rel=1e-4) and both[1:] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="expected finite"):
        cost.set_scene([[0.5, 0.0, 0.03, 0.02, 0.02]])
    with pytest.raises(ValueError, match="obstacle_margin"):
        CostWeights(obstacle_margin=0)


def test_table_term_charges_a_command_into_the_table_and_leaves_a_grasp_alone():
    """The first step's commanded target is taken from the observed tool, so its charge is exact
    whatever the model imagines; a descent to a cube's centre costs nothing."""
    from robotworld.model import load
    from robotworld.planning import CostWeights, WorldModelCost
    from robotworld.planning.costs import FINGERTIP_DROP

    env, obs = _over_the_cube()
    z0 = float(obs["proprio"][17])
    x = torch.zeros(8, 3, 5)
    x[..., 4] = 1.0
    x[:3, 0, 2] = (0.02 - z0) / 0.09  # to the cube's centre over three steps
    x[:, 1, 2] = -1.0  # straight down into the table
    cost = WorldModelCost(load("default"), CostWeights(reward=0, success=0, collision=0, progress=0, obstacle=0,
                                                       table=1, push=0))
    cost.observe(obs, "lift")
    from robotworld.planning.costs import ActionScale, table_charge

    scale = ActionScale(ee_step=env.unwrapped.cfg.max_ee_step)
    cost.set_scene(None, scale)
    grasp, down, stay = cost(x).tolist()
    assert grasp == 0.0 and stay == 0.0 and down > 5.0, (grasp, down, stay)
    start = cost.situation.start
    out = cost.model.imagine(start, x, objects="first", time_major=True)
    first = table_charge(start.tool[:, 2], out.tool_pos, x, scale, 0.005)[0, 1].item()
    tips = z0 - env.unwrapped.cfg.max_ee_step - FINGERTIP_DROP
    assert first == pytest.approx((0.005 - tips) / 0.005, rel=1e-4)
    with pytest.raises(ValueError, match="table_clearance"):
        CostWeights(table_clearance=-0.01)


def test_push_term_charges_a_closed_empty_gripper_kept_beside_the_object_only():
    """Observed closed on nothing, commanded closed, tool beside the object: charged in full;
    commanded open, observed holding, or far from the object: nothing."""
    from robotworld.model.world_model import Imagined
    from robotworld.planning.costs import push_charge

    H, S = 2, 4
    obj = torch.tensor([0.5, 0.0, 0.02]).expand(H, S, 3)
    tool = obj.clone()
    tool[:, 1, 0] += 0.025  # beside it, fingers down at its side
    tool[:, 2, 0] += 0.10  # 10 cm away
    tool[:, 3, 2] += 0.08  # 8 cm above it
    zeros = torch.zeros(H, S)
    out = Imagined(torch.zeros(H + 1, S, 8), zeros, zeros, zeros, zeros, obj[:, :, None], tool, zeros)
    closed, opened = -torch.ones(H, S, 5), torch.ones(H, S, 5)
    empty, holding = torch.tensor([0.002]), torch.tensor([0.04])
    charge = push_charge(out, closed, empty)
    assert charge[:, :2].min() > 0.99 and charge[:, 2:].max() < 0.01, charge
    assert push_charge(out, opened, empty).max() < 0.01
    assert push_charge(out, closed, holding).max() < 0.01


def test_the_gripper_rules_as_cost_terms_charge_what_the_prior_would_deny():
    """With the empty-gripper and centring priors off, imagination keeps the learned grasp; the
    two decision-rule terms charge exactly the grasp the priors would have taken away."""
    import dataclasses

    from robotworld.model.priors import DEFAULT
    from robotworld.planning.costs import grasp_rule_charges

    wm, s, x = _closed_empty_gripper_plans()
    free = dataclasses.replace(DEFAULT, empty_gripper=False, centring=False)
    with torch.no_grad():
        ungated = wm.imagine(s, x, objects="first", time_major=True, priors=free)
        gated = wm.imagine(s, x, objects="first", time_major=True, priors=dataclasses.replace(free, empty_gripper=True,
                                                                                               centring=True))
        empty, off_centre = grasp_rule_charges(ungated, x, s, DEFAULT)
    torch.testing.assert_close(empty + off_centre, ungated.grasp - gated.grasp, atol=1e-5, rtol=0)
    torch.testing.assert_close(empty[:, :32], ungated.grasp[:, :32], atol=1e-5, rtol=0)  # kept closed: all denied
    assert (empty >= 0).all() and (off_centre >= 0).all()


def test_the_whole_arm_term_charges_a_chunk_that_swings_the_arm_into_a_box():
    """With an ArmCollision given, the scorer charges per step the predicted contact of the arm
    (on the controller's IK path for the imagined tool) with a tall box the gripper never nears."""
    import sims
    from robotworld.model import load
    from robotworld.planning.costs import ActionScale, CostWeights, Scorer, arm_collision

    env = sims.make("reach")
    obs, _ = env.reset(seed=0)
    tool = obs["proprio"][15:18]
    scorer = Scorer(load("default"), CostWeights(arm=1.0), arm=arm_collision())
    chunks = np.zeros((2, 8, 5), np.float32)
    chunks[0, :, 0], chunks[0, :, 2] = 1.0, -1.0  # forward and down: the forearm sweeps over the box
    chunks[:, :, 4] = 1.0
    box = [[tool[0] + 0.12, tool[1], 0.2, 0.03, 0.15, 0.2]]  # a tall wall in front of the tool
    s = scorer.score(obs, chunks, "reach", boxes=box, scale=ActionScale.of(env))
    assert s.terms["arm"].shape == (2, 8)
    assert s.terms["arm"][0].sum() > 0.5 and s.terms["arm"][1].sum() == 0, s.terms["arm"]
    no_box = scorer.score(obs, chunks, "reach", scale=ActionScale.of(env))
    assert "arm" not in no_box.terms  # nothing to hit, nothing computed
