"""`indis train --method indis --designs ...`: phi trained in several designs on the same validation priors, the one
with the lowest validation loss kept (the choice `indis bench scaling` counts)."""
from __future__ import annotations

import json

import pytest
import torch
from fake_models import gmm_val_loss

from indis.discretizations.base import load_discretization
from indis.discretizations.prior_net import DESIGNS, design_net
from indis.errors import InputError
from indis.teacher import TeacherSet
from indis.training.config import split_indices

GMM = "python:fake_models:make_gmm"
SMALL = ["--steps", "3", "--iterations", "6", "--val-every", "2", "--batch-size", "8", "--no-progress"]


def test_design_net_options():
    assert design_net("indis", 1024) == {}
    assert design_net("indis-d", 3) == {"denoised_input": True}
    assert design_net("indis-p", 1024) == {"input_basis": 16} and design_net("indis-p", 3) == {"input_basis": 3}
    assert design_net("indis-pd", 64, basis=8) == {"input_basis": 8, "denoised_input": True}
    with pytest.raises(InputError, match="unknown phi design 'indis-x'"):
        design_net("indis-x", 3)
    with pytest.raises(InputError, match="basis size must be >= 1"):
        design_net("indis-p", 3, basis=0)


def test_cli_designs_keeps_the_lowest_validation_loss(tmp_path, capsys):
    from indis.cli import main

    torch.set_num_threads(1)
    t = tmp_path / "t"
    assert main(["teacher", "--model", GMM, "--steps", "8", "--num", "60", "--out", str(t), "--no-progress"]) == 0
    assert main(["train", "--model", GMM, "--teacher", str(t), "--method", "god", "--starts", "1",
                 "--out", str(tmp_path / "god"), *SMALL]) == 0
    capsys.readouterr()
    args = ["train", "--model", GMM, "--teacher", str(t), "--method", "indis", "--designs", "all", "--input-basis", "2",
            "--init", str(tmp_path / "god" / "best"), "--out", str(tmp_path / "ind"), *SMALL]
    assert main(args + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["designs"]
    assert [r["design"] for r in rows] == list(DESIGNS) and sum(r["chosen"] for r in rows) == 1
    ts = TeacherSet(t)
    _, val = split_indices(ts.num_samples, 0.1, seed=0)  # --val-fraction 0.1, --seed 0: the priors every design saw
    losses = {}
    for r in rows:
        d = load_discretization(r["saved"])
        want = design_net(r["design"], 3, basis=2)
        assert d.phi.input_basis == want.get("input_basis", 0) and d.denoised_input == want.get("denoised_input", False)
        losses[r["design"]] = gmm_val_loss(r["saved"], ts, val)
        # the run validated in float32, this in float64 on the same priors and weights: agree to float32 rounding
        assert losses[r["design"]] == pytest.approx(r["best_val"], rel=1e-4)
    chosen = next(r["design"] for r in rows if r["chosen"])
    assert chosen == min(losses, key=losses.get)
    best = load_discretization(tmp_path / "ind" / "best")
    assert best.extra["design"] == chosen
    assert gmm_val_loss(tmp_path / "ind" / "best", ts, val) == pytest.approx(losses[chosen], rel=1e-12)
    assert main(args) == 0  # a rerun reuses every finished design and prints the table
    out = capsys.readouterr().out
    assert "phi design" in out and "chosen" in out and "indis-pd" in out


def test_cli_designs_refuses_what_does_not_fit(tmp_path, capsys):
    from indis.cli import main

    t = tmp_path / "t"
    assert main(["teacher", "--model", GMM, "--steps", "8", "--num", "24", "--out", str(t), "--no-progress"]) == 0
    assert main(["train", "--model", GMM, "--teacher", str(t), "--method", "indis", "--out", str(tmp_path / "one"),
                 *SMALL]) == 0
    assert main(["train", "--model", GMM, "--teacher", str(t), "--method", "indis", "--designs", "indis",
                 "--out", str(tmp_path / "two"), *SMALL]) == 0
    capsys.readouterr()
    for bad, msg in ((["--method", "god", "--designs", "all"], "--designs is an option of phi"),
                     (["--method", "indis", "--designs", "indis-d", "--denoised-input"], "name the designs with --designs"),
                     (["--method", "indis", "--designs", "indis-d", "--input-basis", "2"], "--designs names none"),
                     (["--method", "indis", "--designs", "all", "--out", str(tmp_path / "one")],
                      "holds a training run of one design; drop --designs"),
                     (["--method", "indis", "--out", str(tmp_path / "two")], "holds a training run with --designs; add")):
        out = [] if "--out" in bad else ["--out", str(tmp_path / "bad")]
        assert main(["train", "--model", GMM, "--teacher", str(t), *bad, *out, *SMALL]) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", "--model", GMM, "--teacher", str(t), "--method", "indis", "--designs", "indis-x",
                 "--out", str(tmp_path / "bad"), *SMALL]) == 2
    assert "invalid choice: 'indis-x' (choose from 'indis', 'indis-d'" in capsys.readouterr().err
