import pytest

import sims

TASKS = sims.TASK_NAMES
SIMS = ("mujoco", "pybullet")


@pytest.fixture(params=TASKS)
def task(request):
    return request.param


@pytest.fixture(params=SIMS)
def sim(request):
    return request.param
