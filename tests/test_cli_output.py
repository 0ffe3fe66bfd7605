"""What each command prints: a short summary for people by default (no JSON document, the key figures named) and,
with --json, one JSON document with the fields scripts relied on before the summaries existed."""
from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # python:fake_models:... imports the module from tests/

from indis.cli import main  # noqa: E402
from indis.commands.output import decimals_for, display_scale, fmt_ci, table  # noqa: E402

GMM = "python:fake_models:make_gmm"


def _run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _human(out: str, *figures: str) -> None:
    """No JSON document anywhere in the output, and every key figure named."""
    with pytest.raises(ValueError):
        json.loads(out)
    assert not any(ln.lstrip().startswith(("{", "[")) for ln in out.splitlines()), out
    for f in figures:
        assert f in out, (f, out)


def _json(out: str, *fields: str) -> dict:
    data = json.loads(out)
    for f in fields:
        assert f in data, (f, data)
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher set, a held-out one and a trained GOD schedule on the 3-D Gaussian-mixture model."""
    root = tmp_path_factory.mktemp("out")
    common = ["--model", GMM, "--steps", "8", "--num", "64", "--no-progress"]
    assert main(["teacher", *common, "--out", str(root / "t")]) == 0
    assert main(["teacher", *common, "--out", str(root / "held"), "--seed", "1"]) == 0
    assert main(["train", "--model", GMM, "--teacher", str(root / "t"), "--method", "god", "--steps", "3", "--starts", "2",
                 "--probe-iterations", "3", "--iterations", "6", "--val-every", "3", "--batch-size", "16", "--out",
                 str(root / "god"), "--no-progress", "--json"]) == 0
    return root


def test_teacher(runs, capsys):
    common = ["teacher", "--model", GMM, "--out", str(runs / "t"), "--steps", "8", "--num", "64", "--no-progress"]
    _human(_run(capsys, *common), str(runs / "t"), "64 pairs", "8-step ipndm", "Next", "indis train")
    d = _json(_run(capsys, *common, "--json"), "teacher", "num_samples", "shards", "solver", "steps", "complete")
    assert d["num_samples"] == 64 and d["complete"] is True


def test_train(runs, capsys):
    argv = ["train", "--model", GMM, "--teacher", str(runs / "t"), "--method", "god", "--steps", "3", "--starts", "2",
            "--probe-iterations", "3", "--iterations", "6", "--val-every", "3", "--batch-size", "16", "--out",
            str(runs / "god"), "--no-progress"]
    d = _json(_run(capsys, *argv, "--json"), "method", "steps", "best_val", "best_iter", "iterations", "stop_reason",
              "seconds", "reused", "starts", "saved")
    out = _run(capsys, *argv)
    _human(out, "best validation mse", f"{d['best_val']:.4g}", "logsnr", "chosen", d["saved"], "Next:", "indis sample",
           "indis eval")
    # the start is a validation candidate too, so the best is never above it; the summary says how far training moved
    assert d["start_val"] >= d["best_val"] > 0
    assert ("at the start" in out) != ("no iteration improved on the start" in out), out


def test_schedule_sample_export(runs, capsys):
    sch = ["schedule", "--model", GMM, "--method", "edm", "--steps", "3"]
    d = _json(_run(capsys, *sch, "--json"), "method", "steps", "times", "saved")
    _human(_run(capsys, *sch, "--out", str(runs / "edm3")), "edm schedule", "N=3", f"{d['times'][1]:.4g}", str(runs / "edm3"))
    smp = ["sample", "--model", GMM, "--discretization", str(runs / "god" / "best"), "--num", "4"]
    d = _json(_run(capsys, *smp, "--out", str(runs / "s1"), "--json"), "samples", "picture", "method", "steps", "solver")
    _human(_run(capsys, *smp, "--out", str(runs / "s2")), "4 samples", str(runs / "s2" / "samples.safetensors"))
    exp = ["export", "--discretization", str(runs / "god" / "best"), "--format", "sigmas-json"]
    d = _json(_run(capsys, *exp, "--out", str(runs / "a.json"), "--json"), "saved", "sigmas", "dropped")
    _human(_run(capsys, *exp, "--out", str(runs / "b.json")), str(runs / "b.json"), f"{d['sigmas'][1]:.4g}")


def test_eval_table(runs, capsys):
    argv = ["eval", "--model", GMM, "--teacher", str(runs / "held"), "--discretization", str(runs / "god" / "best"),
            "--method", "edm", "--steps", "3", "--replicates", "50"]
    d = _json(_run(capsys, *argv, "--json"), "teacher", "priors", "metric", "results", "differences_vs_first")
    out = _run(capsys, *argv)
    _human(out, "teacher-MSE", "64 held-out priors", "(reference)", "edm (N=3, ipndm)")
    rows = [ln for ln in out.splitlines() if ln.startswith((str(runs), "edm"))]
    assert len(rows) == 2 and "[" in rows[1]
    diff = d["differences_vs_first"][0]
    assert rows[1].rstrip().endswith("*") == diff["significant"]  # the mark follows the interval


def test_eval_round_off_is_not_a_difference():
    """A paired difference whose interval excludes 0 but that is below ROUNDOFF of the reference (one schedule under two
    parameterisations) is marked ~, not *; a real difference of 10% is *."""
    import numpy as np

    from indis.commands.evaluate import ROUNDOFF, _table, difference

    ref = np.random.default_rng(0).gamma(2.0, 1.0, 500)
    same = ref * (1 + 1e-7)  # every prior 1e-7 relative higher: a paired interval excludes 0 by construction
    d = difference(same, ref, 200)
    assert d["ci95"][0] > 0 and not d["significant"] and d["within_roundoff"]
    assert d["diff"] == pytest.approx(1e-7 * ref.mean(), rel=1e-6) and 1e-7 < ROUNDOFF
    real = difference(ref * 0.9, ref, 200)
    assert real["significant"] and not real["within_roundoff"]
    data = {"teacher": "t", "priors": 500, "results": [{"name": n, "nfe": 3, "mse": float(x.mean()), "ci95": [0.0, 9.0]}
                                                       for n, x in (("god", ref), ("indis", same), ("edm", ref * 0.9))],
            "differences_vs_first": [{"a": "indis", "b": "god", **d}, {"a": "edm", "b": "god", **real}]}
    rows = _table(data).splitlines()
    assert next(r for r in rows if r.startswith("indis")).rstrip().endswith("~")
    assert next(r for r in rows if r.startswith("edm")).rstrip().endswith("*")
    assert any("float round-off" in r for r in rows)


def test_zoo_list(capsys):
    _human(_run(capsys, "zoo", "list"), "zoo:digits", "zoo:digits-cond", "digits-classifier", "held-out accuracy")
    models = json.loads(_run(capsys, "zoo", "list", "--json"))
    assert [m["name"] for m in models][:2] == ["zoo:digits", "zoo:digits-cond"]


def test_formatting_helpers():
    # two significant digits of the interval's half-width decide the decimals
    assert decimals_for(0.05) == 3 and decimals_for(3.0) == 1 and decimals_for(30.0) == 0 and decimals_for(0.5) == 2
    assert fmt_ci(0.01234, (0.0119, 0.0128), scale=1e3) == "12.34 [11.90, 12.80]"  # half-width 0.45
    assert fmt_ci(-1.2, (-2.0, -0.4), signed=True) == "-1.20 [-2.00, -0.40]"  # half-width 0.8
    assert fmt_ci(148.7, (120.2, 180.9)) == "149 [120, 181]"  # half-width 30
    assert display_scale([0.0123, 0.05]) == (1e3, " x1e3") and display_scale([12.0]) == (1.0, "")
    t = table(["a", "bb"], [["x", 1], ["long", 22]], [False, True]).splitlines()
    assert t[0] == "a     bb" and t[2] == "x      1" and t[3] == "long  22"
