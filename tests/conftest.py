import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import sims  # noqa: E402

TASKS = sims.TASK_NAMES
SIMS = ("mujoco", "pybullet")


@pytest.fixture(params=TASKS)
def task(request):
    return request.param


@pytest.fixture(params=SIMS)
def sim(request):
    return request.param
