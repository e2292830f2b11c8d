"""Scripted experts succeed on a small seeded episode count, in both engines."""

import sims
from robotworld.evaluation import EvalConfig, evaluate


def test_expert_success(task, sim):
    res = evaluate(EvalConfig(task=task, sim=sim, episodes=10, seed=1000, progress=False))
    assert res.success_rate >= 0.9, res


def test_noisy_expert_is_diverse_but_competent():
    res = evaluate(EvalConfig(task="pick_place", policy="noisy-expert", episodes=10,
                              progress=False))
    assert 0.3 <= res.success_rate <= 1.0


def test_expert_reproducible():
    a = evaluate(EvalConfig(task="lift", episodes=3, progress=False))
    b = evaluate(EvalConfig(task="lift", episodes=3, progress=False))
    assert a == b
    assert sims.TASK_NAMES
