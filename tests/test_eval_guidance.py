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
                                         (["--model", "zoo:digits-cond", "--guidance", "-1"], "in [0, 1000]"),
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
    assert main(["eval", "--json", "--model", "zoo:digits", "--teacher", str(te), "--discretization", god, "--method", "edm",
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
    assert d["significant"] == bool((d["ci95"][0] > 0 or d["ci95"][1] < 0) and not d["within_roundoff"])
    # numbers on the priors a schedule was trained on are refused
    assert main(["eval", "--model", "zoo:digits", "--teacher", str(tr), "--discretization", god]) == 2
    assert "held-out" in capsys.readouterr().err
    assert main(["eval", "--model", "zoo:digits", "--teacher", str(te), "--method", "gits", "--steps", "3"]) == 2
    assert "indis schedule" in capsys.readouterr().err
    assert np.isfinite(r["results"][0]["ci95"]).all()


def test_per_sample_guidance_equals_scalar_guidance_row_by_row():
    h = indis.load_model("zoo:digits-cond").with_guidance_range(1, 6)
    g = torch.Generator().manual_seed(0)
    x, labels, t = torch.randn(3, 1, 8, 8, generator=g) * 5, torch.tensor([1, 4, 8]), torch.full((3,), 5.0)
    scales = torch.tensor([1.0, 2.5, 6.0])
    out, _ = h.denoiser(x, t, {"class": labels, "guidance_scale": scales})
    for i in range(3):
        ref = indis.load_model("zoo:digits-cond").with_guidance(float(scales[i]))
        r, _ = ref.denoiser(x[i:i + 1], t[i:i + 1], labels[i:i + 1])
        # float32 model, one batched CFG call vs one call per row: rounding-level differences only
        torch.testing.assert_close(out[i:i + 1], r, rtol=1e-4, atol=1e-4)


def test_guidance_range_teacher_train_sample(tmp_path, capsys):
    t = tmp_path / "t"
    common = ["--model", "zoo:digits-cond", "--guidance-range", "1,6"]
    assert main(["teacher", *common, "--out", str(t), "--num", "48", "--steps", "4", "--solver", "euler", "--no-progress"]) == 0
    ts = TeacherSet(t)
    idx, xT, c, x0 = ts.batch(torch.arange(48))
    gs = c["guidance_scale"]
    assert ((gs >= 1) & (gs <= 6)).all() and len(set(gs.tolist())) == 48  # one scale per sample
    assert torch.equal(TeacherSet(t).cond(torch.arange(48))["class"], c["class"])  # regenerated identically
    fn = indis.load_model("zoo:digits-cond").denoiser.model
    times = torch.tensor(ts.config.times, dtype=torch.float64)
    ref = xT[:4].clone()
    for i in range(len(times) - 1):
        tt = torch.full((4,), float(times[i]))
        cc, u = fn(ref, tt, c["class"][:4]), fn(ref, tt, torch.full((4,), 10))
        ref = ref + (times[i + 1] - times[i]) * (ref - (u + gs[:4, None, None, None] * (cc - u))) / times[i]
    torch.testing.assert_close(x0[:4], ref.float(), rtol=1e-4, atol=1e-4)  # float32 rounding only (see above)
    assert main(["train", *common, "--teacher", str(t), "--method", "indis", "--nfe", "3", "--iterations", "20",
                 "--val-every", "10", "--lr", "1e-2", "--out", str(tmp_path / "i"), "--no-progress"]) == 0
    capsys.readouterr()
    d = indis.load_discretization(tmp_path / "i" / "best")
    assert d.phi.guidance_range == [1.0, 6.0]
    x = xT[:2]
    with torch.no_grad():  # the best checkpoint of so short a run may still be the warm start (zero head weights)
        torch.nn.init.normal_(d.phi.head.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    t2 = d(x, {"class": c["class"][:2], "guidance_scale": torch.tensor([1.0, 1.0])}).times
    t6 = d(x, {"class": c["class"][:2], "guidance_scale": torch.tensor([6.0, 6.0])}).times
    assert not torch.equal(t2, t6)  # the schedule depends on the guidance scale
    s = ["sample", "--model", "zoo:digits-cond", "--discretization", str(tmp_path / "i" / "best"), "--num", "4"]
    assert main(s + ["--out", str(tmp_path / "s0"), "--force"]) == 2
    assert "--guidance G" in capsys.readouterr().err
    assert main(s + ["--guidance", "4", "--out", str(tmp_path / "s4"), "--force"]) == 0


def test_sets_without_a_guidance_range_keep_their_manifest_and_resume(tmp_path, capsys):
    import json as _json_mod

    t = tmp_path / "t"
    argv = ["teacher", "--model", "zoo:digits-cond", "--out", str(t), "--steps", "3", "--no-progress"]
    assert main(argv + ["--num", "8"]) == 0
    m = _json_mod.loads((t / "manifest.json").read_text())
    assert set(m["config"]["cond"]) == {"kind", "num_classes", "table_size"}  # as written before guidance ranges
    assert main(argv + ["--num", "16"]) == 0  # extends the set with the same settings
    assert TeacherSet(t).num_samples == 16
