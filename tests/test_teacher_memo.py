"""TeacherSet serves x_T, class labels and guidance scales from memory after their first regeneration: the values
equal a fresh regeneration from the seed, callers get copies, and indices outside the set are still made afresh."""
import os
import sys

import pytest
import torch

import indis
import indis.teacher as teacher_mod
from indis.discretizations import heuristic
from indis.errors import InputError
from indis.priors import CondSpec, class_labels, guidance_scales, prior_noise
from indis.teacher import TeacherSet, generate_teacher

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import ring_mixture  # noqa: E402


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    sched = indis.FlowMatching()
    den = indis.Denoiser(ring_mixture().x0_fn(sched), sched, "x0")
    path = tmp_path_factory.mktemp("memo")
    generate_teacher(den, path, [2], 300, times=heuristic("uniform", 8, sched), shard_size=100, batch_size=300,
                     seed=17, progress=False, cond=CondSpec("class", num_classes=2))
    return path


def test_remembered_priors_equal_a_fresh_regeneration(made, monkeypatch):
    ts = TeacherSet(made)
    idx = torch.tensor([5, 7, 5, 299, 0])
    std = ts.config.prior_std
    # the same float32 operations on the same inputs in this process: equality is exact
    assert torch.equal(ts.x_T(idx), prior_noise(idx, 17, [2], std))
    assert torch.equal(ts.cond(idx), class_labels(idx, 17, 2))
    got = ts.x_T(idx)
    got += 1.0  # a caller's in-place change must not reach the remembered values
    assert torch.equal(ts.x_T(idx), prior_noise(idx, 17, [2], std))
    assert torch.equal(ts.x_T(idx, torch.float64), prior_noise(idx, 17, [2], std, torch.float64))

    def refuse(*a, **k):
        raise AssertionError("regenerated a remembered prior")

    monkeypatch.setattr(teacher_mod, "prior_noise", refuse)
    monkeypatch.setattr(teacher_mod, "class_labels", refuse)
    ts.x_T(torch.tensor([7, 0]))  # served from memory
    ts.cond(torch.tensor([299]))
    with pytest.raises(AssertionError, match="regenerated"):
        ts.x_T(torch.tensor([6]))  # not asked for before: made afresh
    monkeypatch.undo()
    assert torch.equal(ts.x_T(torch.tensor([300, 301])), prior_noise([300, 301], 17, [2], std))  # outside the set
    with pytest.raises(InputError, match=">= 0"):
        ts.x_T(torch.tensor([-1]))


def test_remembered_guidance_scales(made):
    ts = TeacherSet(made)
    ts.cond_spec.guidance = [1.0, 3.0]  # a guidance range is served through the same memory
    idx = torch.tensor([3, 250, 3])
    c = ts.cond(idx)
    assert torch.equal(c["class"], class_labels(idx, 17, 2))
    assert torch.equal(c["guidance_scale"], guidance_scales(idx, 17, 1.0, 3.0))
    assert c["guidance_scale"].unique().numel() == 2
