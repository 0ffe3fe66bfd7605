"""`--guidance` on the CLI (classifier-free guidance through the zoo model's null class) and `indis eval`
(teacher-MSE on held-out pairs with intervals), each against an independent computation."""
import json

import numpy as np
import pytest
import torch

import indis
from indis.cli import main
from indis.teacher import TeacherSet


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_cli_guided_teacher_equals_cfg_by_hand(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["teacher", "--model", "zoo:digits-cond", "--guidance", "3", "--out", str(out), "--num", "4", "--steps", "4",
                 "--solver", "euler", "--no-progress"]) == 0
    capsys.readouterr()
    ts = TeacherSet(out)
    idx, xT, labels, x0 = ts.batch(torch.arange(4))
    fn = indis.load_model("zoo:digits-cond").denoiser.model
    times = torch.tensor(ts.config.times, dtype=torch.float64)
    ref = xT.clone()
    for i in range(len(times) - 1):
        t = torch.full((4,), float(times[i]))
        c, u = fn(ref, t, labels), fn(ref, t, torch.full((4,), 10))  # label 10: the learned null class
        ref = ref + (times[i + 1] - times[i]) * (ref - (u + 3.0 * (c - u))) / times[i]
    # float32 model; batched CFG call vs two separate calls: rounding-level differences only
    torch.testing.assert_close(x0, ref.float(), rtol=1e-4, atol=1e-4)
    # the unguided model is not the model that made this teacher set
    assert main(["train", "--model", "zoo:digits-cond", "--teacher", str(out), "--method", "god", "--nfe", "3",
                 "--out", str(tmp_path / "g"), "--iterations", "1", "--no-progress"]) == 2
    assert "--guidance" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [(["--model", "zoo:digits", "--guidance", "2"], "unconditional input"),
                                         (["--model", "zoo:digits-cond", "--guidance", "-1"], ">= 0"),
                                         (["--model", "zoo:digits-cond", "--guidance", "nan"], "--guidance")])
def test_bad_guidance_exits_2(tmp_path, capsys, argv, needle):
    assert main(["sample", *argv, "--method", "edm", "--steps", "3", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_eval_matches_sampling_by_hand_and_refuses_training_priors(tmp_path, capsys):
    tr, te = tmp_path / "train", tmp_path / "test"
    for folder, seed in ((tr, 0), (te, 1)):
        assert main(["teacher", "--model", "zoo:digits", "--out", str(folder), "--num", "40", "--seed", str(seed),
                     "--no-progress"]) == 0
    assert main(["train", "--model", "zoo:digits", "--teacher", str(tr), "--method", "god", "--nfe", "3", "--starts", "1",
                 "--iterations", "5", "--val-every", "5", "--out", str(tmp_path / "god"), "--no-progress"]) == 0
    capsys.readouterr()
    god = str(tmp_path / "god" / "best")
    assert main(["eval", "--model", "zoo:digits", "--teacher", str(te), "--discretization", god, "--method", "edm",
                 "--steps", "3", "--replicates", "50"]) == 0
    r = _json(capsys)
    assert r["priors"] == 40 and [x["nfe"] for x in r["results"]] == [3, 3]
    h, ts = indis.load_model("zoo:digits"), TeacherSet(te)
    _, xT, _, x0 = ts.batch(torch.arange(40))
    with torch.no_grad():
        ref = {"god": indis.load_discretization(god).sample(h.denoiser, xT),
               "edm": indis.sample(h.denoiser, xT, indis.heuristic("edm", 3, h.schedule), solver="ipndm")}
    mse = {k: (v - x0).double().pow(2).flatten(1).mean(1).numpy() for k, v in ref.items()}
    # same model calls on the same inputs in this process; the mean is taken in float64: equal to rounding
    assert r["results"][0]["mse"] == pytest.approx(mse["god"].mean(), rel=1e-5)
    assert r["results"][1]["mse"] == pytest.approx(mse["edm"].mean(), rel=1e-5)
    lo, hi = r["results"][1]["ci95"]
    assert lo < mse["edm"].mean() < hi
    d = r["differences_vs_first"][0]
    assert d["diff"] == pytest.approx(mse["edm"].mean() - mse["god"].mean(), rel=1e-4)
    assert d["significant"] == bool(d["ci95"][0] > 0 or d["ci95"][1] < 0)
    # numbers on the priors a schedule was trained on are refused
    assert main(["eval", "--model", "zoo:digits", "--teacher", str(tr), "--discretization", god]) == 2
    assert "held-out" in capsys.readouterr().err
    assert main(["eval", "--model", "zoo:digits", "--teacher", str(te), "--method", "gits", "--steps", "3"]) == 2
    assert "indis schedule" in capsys.readouterr().err
    assert np.isfinite(r["results"][0]["ci95"]).all()
