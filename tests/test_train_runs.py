"""`indis train --runs R`: the same training repeated under R seeds on the same validation priors, the run with the
lowest validation loss kept (training can land far apart from one seed to the next; see benchmarks/README.md)."""
from __future__ import annotations

import json

import pytest
import torch
from fake_models import gmm_val_loss

from indis.commands.train import run_configs
from indis.discretizations.base import load_discretization
from indis.errors import InputError
from indis.teacher import TeacherSet
from indis.training import TrainConfig
from indis.training.config import split_indices, train_seed

GMM = "python:fake_models:make_gmm"
SMALL = ["--steps", "3", "--iterations", "6", "--val-every", "2", "--batch-size", "8", "--no-progress"]


def test_run_configs_share_the_split_and_differ_in_seed():
    cfg = TrainConfig(val_fraction=0.2, seed=5)
    assert run_configs(cfg, 50, 1) == [cfg]
    cfgs = run_configs(cfg, 50, 4)
    assert [c.seed for c in cfgs] == [5] + [train_seed(5, k) for k in (1, 2, 3)] and len({c.seed for c in cfgs}) == 4
    tr, va = split_indices(50, 0.2, seed=5)  # run 0's split: a plain run of --seed 5 validates on these priors
    for c in cfgs:
        assert c.val_indices == va.tolist() and c.train_indices == tr.tolist()
    assert not set(cfgs[0].val_indices) & set(cfgs[0].train_indices)
    assert sorted(cfgs[0].val_indices + cfgs[0].train_indices) == list(range(50))
    with pytest.raises(InputError, match="--runs must be >= 1"):
        run_configs(cfg, 50, 0)
    with pytest.raises(InputError, match="--val-fraction > 0"):
        run_configs(TrainConfig(val_fraction=0.0), 50, 2)


def test_cli_runs_keep_the_lowest_validation_loss_and_extend(tmp_path, capsys):
    from indis.cli import main

    torch.set_num_threads(1)
    t = tmp_path / "t"
    assert main(["teacher", "--model", GMM, "--steps", "8", "--num", "60", "--out", str(t), "--no-progress"]) == 0
    base = ["train", "--model", GMM, "--teacher", str(t), "--method", "god", "--starts", "1", *SMALL]
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "plain"), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--runs", "3", "--out", str(tmp_path / "g"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert [r["run"] for r in rows] == [0, 1, 2] and sum(r["chosen"] for r in rows) == 1
    assert rows[0]["seed"] == 0 and len({r["seed"] for r in rows}) == 3
    # run 0 is the plain run (same seed, same split): same ops in one process and thread, so equal up to rounding
    assert rows[0]["best_val"] == pytest.approx(plain["best_val"], rel=1e-6)
    assert len({round(r["best_val"], 12) for r in rows}) > 1  # other batch orders land elsewhere
    ts = TeacherSet(t)
    _, val = split_indices(ts.num_samples, 0.1, seed=0)  # --val-fraction 0.1, --seed 0: the priors every run saw
    losses = [gmm_val_loss(r["saved"], ts, val) for r in rows]
    for r, v in zip(rows, losses):  # validated in float32 during training, here in float64: float32 rounding apart
        assert v == pytest.approx(r["best_val"], rel=1e-4)
    chosen = next(i for i, r in enumerate(rows) if r["chosen"])
    assert chosen == min(range(3), key=losses.__getitem__)
    best = load_discretization(tmp_path / "g" / "best")
    assert best.extra["run"] == chosen and best.extra["seed"] == rows[chosen]["seed"]
    assert gmm_val_loss(tmp_path / "g" / "best", ts, val) == pytest.approx(losses[chosen], rel=1e-12)
    assert main(base + ["--runs", "4", "--out", str(tmp_path / "g"), "--json"]) == 0  # more runs: three are reused
    more = json.loads(capsys.readouterr().out)
    assert [r["reused"] for r in more["runs"]] == [True, True, True, False] and not more["reused"]
    assert [r["best_val"] for r in more["runs"][:3]] == [r["best_val"] for r in rows]  # read back from the same files
    assert main(base + ["--runs", "4", "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr()
    assert "over the 4 trainings: best" in out.out and "worst/best" in out.out and "reused it" in out.err
    assert sorted(p.name for p in (tmp_path / "g" / "runs").iterdir()) == ["0", "1", "2", "3"]


def test_cli_runs_refuse_what_does_not_fit(tmp_path, capsys):
    from indis.cli import main

    t = tmp_path / "t"
    assert main(["teacher", "--model", GMM, "--steps", "8", "--num", "24", "--out", str(t), "--no-progress"]) == 0
    base = ["train", "--model", GMM, "--teacher", str(t), *SMALL]
    assert main(base + ["--method", "god", "--starts", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(base + ["--method", "god", "--starts", "1", "--runs", "2", "--out", str(tmp_path / "two")]) == 0
    assert main(base + ["--method", "indis", "--designs", "indis", "--out", str(tmp_path / "des")]) == 0
    capsys.readouterr()
    assert main(base + ["--method", "indis", "--designs", "indis", "indis-d", "--runs", "2", "--out", str(tmp_path / "dr"),
                        "--json"]) == 0  # each design in two runs, one kept over all four
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["design"], r["run"]) for r in rows] == [("indis", 0), ("indis", 1), ("indis-d", 0), ("indis-d", 1)]
    assert sum(r["chosen"] for r in rows) == 1 and rows[0]["seed"] == rows[2]["seed"] == 0
    assert all((tmp_path / "dr" / "designs" / d / "runs" / k / "best").is_dir() for d in ("indis", "indis-d") for k in "01")
    for bad, msg in ((["--method", "god", "--runs", "2", "--out", str(tmp_path / "one")], "drop --runs"),
                     (["--method", "god", "--out", str(tmp_path / "two")], "give --runs > 1"),
                     (["--method", "indis", "--designs", "indis", "--runs", "2", "--out", str(tmp_path / "des")],
                      "drop --runs"),
                     (["--method", "oracle", "--runs", "2", "--out", str(tmp_path / "o")], "the oracle is fitted"),
                     (["--method", "god", "--runs", "0", "--out", str(tmp_path / "z")], "--runs"),
                     (["--method", "god", "--runs", "2", "--val-fraction", "0", "--out", str(tmp_path / "v")],
                      "--val-fraction > 0")):
        assert main([*base, *bad]) == 2, bad
        assert msg in capsys.readouterr().err, bad
