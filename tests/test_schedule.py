"""Schedules: pure functions of (step, share of budget spent); plateau keeps state and lowers
the rate exactly as torch's ReduceLROnPlateau does; the budget stops training and measures
its share spent."""

import math

import pytest
import torch

from nmt.config import TrainingConfig
from nmt.training.distributed import Dist
from nmt.training.schedule import Budget, Schedule, cosine, inverse_sqrt


def test_inverse_sqrt():
    assert inverse_sqrt(50, 100) == pytest.approx(0.5) and inverse_sqrt(100, 100) == 1.0
    assert inverse_sqrt(400, 100) == pytest.approx(0.5)
    assert inverse_sqrt(0, 100) == pytest.approx(0.01)  # the first update: step counts from 1


def test_cosine():
    assert cosine(0.0, 0, 0, 0.0) == 1.0 and cosine(1.0, 500, 0, 0.0) == pytest.approx(0.0)
    assert cosine(0.5, 500, 0, 0.0) == pytest.approx(0.5)
    assert cosine(0.5, 500, 0, 0.2) == pytest.approx(0.6)  # halfway between 1 and the floor
    assert cosine(1.7, 500, 0, 0.2) == pytest.approx(0.2)  # an overrun budget stays at the floor
    assert cosine(0.0, 9, 100, 0.0) == pytest.approx(0.1)  # warmup: the 10th of 100 updates


def test_rates_of_the_stateless_schedules():
    cfg = dict(lr=0.01, min_lr=0.001, warmup_steps=10)
    constant = Schedule(TrainingConfig(schedule="constant", **cfg))
    assert [constant.rate(s, spent) for s, spent in ((0, 0.0), (99, 0.9))] == [0.01, 0.01]
    inv = Schedule(TrainingConfig(schedule="inverse_sqrt", **cfg))
    assert inv.rate(4) == pytest.approx(0.004) and inv.rate(40) == pytest.approx(0.005)
    assert inv.rate(10**6) == pytest.approx(0.001)  # never below min_lr
    cos = Schedule(TrainingConfig(schedule="cosine", **cfg))
    assert cos.follows_budget and not inv.follows_budget
    assert cos.rate(50, 0.5) == pytest.approx(0.001 + 0.009 * 0.5)
    assert cos.rate(50, 0.5) == cos.rate(50, 0.5)  # a pure function: asking changes nothing


def test_plateau_follows_torch_reduce_lr_on_plateau():
    """The same scores give the same rates as torch's scheduler (mode max, rel 1e-4)."""
    cfg = TrainingConfig(schedule="plateau", lr=0.1, min_lr=0.01, plateau_factor=0.5,
                         plateau_patience=1)
    ours = Schedule(cfg)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    torchs = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                        patience=1, min_lr=0.01)
    scores = [1.0, 2.0, 2.0, 2.0001, 1.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    rates = []
    for value in scores:
        ours.validated(value)
        torchs.step(value)
        rates.append(ours.rate(0))
        assert ours.rate(0) == pytest.approx(optimizer.param_groups[0]["lr"])
    assert rates[-1] == 0.01 and min(rates) == 0.01 and rates[0] == 0.1  # lowered to the floor


def test_plateau_state_round_trips_and_others_ignore_scores():
    cfg = TrainingConfig(schedule="plateau", lr=0.1, plateau_patience=0)
    first = Schedule(cfg)
    for value in (5.0, 4.0, 3.0):
        first.validated(value)
    second = Schedule(cfg)
    second.load_state_dict(first.state_dict())
    assert second.rate(7) == first.rate(7) == pytest.approx(0.025)
    constant = Schedule(TrainingConfig(schedule="constant", lr=0.1))
    for value in (5.0, 4.0, 3.0):
        constant.validated(value)
    assert constant.rate(7) == 0.1


def test_budget_stops_and_measures_the_furthest_limit():
    cpu = torch.device("cpu")
    budget = Budget(TrainingConfig(max_steps=100, max_epochs=4, patience=3), Dist(), cpu)
    assert budget.spent(50, 1.0) == 0.5  # steps are furthest along
    assert budget.spent(10, 3.0) == 0.75  # epochs are
    assert not budget.exhausted(99, 3, 2)
    assert budget.exhausted(100, 0, 0) and budget.exhausted(0, 4, 0)
    assert budget.exhausted(0, 0, 3)  # early stopping
    timed = Budget(TrainingConfig(max_steps=None, max_epochs=None, max_minutes=10.0), Dist(),
                   cpu)
    timed.resume(300.0)  # five of the ten minutes already ran before a resume
    assert timed.spent(0, 0.0) == pytest.approx(0.5, abs=0.01)
    assert not timed.exhausted(0, 0, 0)
    timed.resume(600.0)
    assert timed.exhausted(0, 0, 0) and math.isclose(timed.spent(0, 0.0), 1.0, abs_tol=0.01)


def test_the_budget_is_told_in_words_and_its_end_estimated_from_the_rate():
    from nmt.training.schedule import describe_budget

    cfg = TrainingConfig(max_minutes=30.0, max_epochs=30, max_steps=None, patience=8)
    assert describe_budget(cfg) == ("at most 30 minutes (training.max_minutes) or 30 epochs "
                                    "(training.max_epochs), whichever comes first; early stop "
                                    "after 8 validations without a better BLEU")
    assert describe_budget(TrainingConfig(max_epochs=None, patience=0)) == \
        "no step, epoch or time limit"
    budget = Budget(cfg, Dist(), torch.device("cpu"))
    # 100 updates, half an epoch in 60 s: 30 epochs would take 60 minutes, so time ends it
    assert budget.estimate(100, 0.5, 60.0) == (1800.0, "training.max_minutes")
    # two epochs a minute: 30 epochs take 15 minutes
    assert budget.estimate(100, 2.0, 60.0) == (900.0, "training.max_epochs")
    steps = Budget(TrainingConfig(max_steps=1000, max_epochs=None), Dist(), torch.device("cpu"))
    assert steps.estimate(100, 0.1, 30.0) == (300.0, "training.max_steps")
    none = Budget(TrainingConfig(max_epochs=None), Dist(), torch.device("cpu"))
    assert math.isinf(none.estimate(100, 0.1, 30.0)[0])
