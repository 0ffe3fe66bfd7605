"""`indis bench digits` in miniature on the shipped zoo:digits model: every row and column of the protocol, choices
made on validation priors, disjoint prior splits, confidence intervals, a rerun that recomputes nothing, and clear
errors for bad settings. Plus the guided teacher against classifier-free guidance written out by hand."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from indis.bench import digits as bd
from indis.bench import digits_report as rep
from indis.cli import main

TINY = ["--quick", "--nfe", "3", "--num-train", "96", "--num-val", "48", "--num-test", "64", "--cap", "20", "--probe", "4",
        "--patience", "2", "--val-every", "10", "--oracle-priors", "8", "--gits-warmup", "8", "--phi-hidden", "32",
        "--phi-channels", "8", "--replicates", "20", "--god-lrs", "5e-2", "5e-3", "--indis-lrs", "1e-3", "1e-4",
        "--no-progress", "--json"]


def _args(out, extra=()):
    p = argparse.ArgumentParser()
    bd.add_arguments(p)
    return p.parse_args(["--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-digits")
    assert bd.main(_args(out)) == 0
    return out, json.loads((out / "results.json").read_text())


def test_every_row_and_column(tiny):
    out, res = tiny
    assert res["benchmark"] == "digits" and res["model"] == "zoo:digits" and res["settings"]["nfes"] == [3]
    assert res["real_heldout"] == 297 and "FD (real, held-out 297)" in (out / "results.md").read_text()  # sklearn's split
    assert set(res["table"]) == set(rep.ROWS)
    for row in rep.ROWS:
        c = res["table"][row]["3"]
        for col in ("fd", "fd_ci", "fd_heldout", "fd_teacher", "kid", "mse", "solver", "afs", "seconds"):
            assert col in c, (row, col)
        assert c["fd_ci"][0] <= c["fd"] + 1e-9 or c["fd_ci"][0] <= c["fd_ci"][1]
        if row not in ("best-heuristic", "dmn", "gits"):
            assert c["iterations"] >= 0 and all(r in ("patience", "cap") for r in c["stop_reason"])
    assert res["table"]["amed"]["3"]["afs"] == [True] and res["table"]["epd"]["3"]["afs"] == [True]  # odd NFE: AFS
    cmp = res["comparisons"]["3"]
    assert cmp["best_baseline"] in rep.BASELINES and set(cmp["vs"]) == set(rep.BASELINES)
    for v in cmp["vs"].values():
        assert v["fd"]["ci"][0] <= v["fd"]["ci"][1] and len(v["fd"]["per_seed"]) == 1
    assert "3" in res["oracle"] and res["oracle"]["3"]["priors"] == 8
    abl = res["ablations"]["3"]
    assert set(abl) == {"full", "no-instance", "no-shift", "no-scale", "times-only", "plus-denoised",
                        "plus-projected"}  # with or without AFS
    for v in set(abl) - {"full"}:  # paired difference to the full INDIS on the same test priors
        d = abl[v]["vs_full"]
        assert d["mse"]["ci"][0] <= d["mse"]["diff"] <= d["mse"]["ci"][1] and d["fd"]["ci"][0] <= d["fd"]["ci"][1]
    md = (out / "results.md").read_text()
    for label in ("Best heuristic", "DMN", "GITS", "LD3", "GOD", "AMED", "EPD", "INDIS", "not FID", "Oracle", "Ablations"):
        assert label.lower() in md.lower(), label
    for f in ("ablations.png", "timesteps.png", "grid.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choices_are_made_on_validation(tiny):
    out, res = tiny
    seed = json.loads((out / "seed-0" / "results.json").read_text())
    bh = seed["main"]["3"]["best-heuristic"]
    cands = bh["choice"]["candidates"]
    chosen = f"{bh['spec']['method']}/{bh['spec']['solver']}{'+afs' if bh['spec']['afs'] else ''}"
    assert len(cands) == 4 * 6 and cands[chosen] == min(cands.values())  # 4 heuristics x 3 solvers x AFS on/off
    assert bh["val"]["fd"] == pytest.approx(cands[chosen], abs=1e-5)
    god = seed["main"]["3"]["god"]
    assert len(god["choice"]["probes"]) == 6
    best = min(god["choice"]["probes"], key=god["choice"]["probes"].get)
    assert best == f"{god['spec']['solver']}{'+afs' if god['spec']['afs'] else ''}"
    for m in ("amed", "epd"):  # every (solver family x base) trained with the reference recipe; lowest validation FD wins
        row = seed["main"]["3"][m]
        cands = row["choice"]["candidates"]
        assert sorted(cands) == sorted(f"{s}+afs/{b}" for s in (m, "ipndm") for b in ("edm", "time_uniform")), cands
        passes = row["choice"]["passes"]  # the winner again over 4 passes, kept only if validation FD is lower
        assert row["val"]["fd"] == pytest.approx(min(min(cands.values()), passes["4"]), abs=1e-5)
        assert passes["1"] == pytest.approx(min(cands.values()), abs=1e-5)
        assert (row["spec"].get("passes", 1) == 4) == (passes["4"] < passes["1"])
        assert row["train"]["keep"] == "last" and row["spec"]["train"]["priors"] == 96
    ind = seed["main"]["3"]["indis"]
    warm = seed["main"]["3"][ind["choice"]["warm_start"]]
    assert (ind["spec"]["solver"], ind["spec"]["afs"]) == (warm["spec"]["solver"], warm["spec"]["afs"])
    for m, rates in (("god", ("0.05", "0.005")), ("indis", ("0.001", "0.0001"))):  # each rate trained, lowest kept
        row = seed["main"]["3"][m]
        choice = row["train"]["lr_choice"]
        assert sorted(choice) == sorted(rates) and row["train"]["best_val"] == min(choice.values())
        assert f"{row['spec']['train']['lr']:g}" == min(choice, key=choice.get)
    assert ind["spec"]["warm"] == Path(warm["run"]).name  # INDIS starts from the GOD at its chosen rate
    assert res["table"]["god"]["3"]["lr"] == [god["spec"]["train"]["lr"]]


def test_prior_splits_are_disjoint(tiny):
    from indis.teacher import TeacherSet

    out, _ = tiny
    sets = [TeacherSet(p) for p in sorted((out / "seed-0" / "teachers").iterdir())]
    assert sorted(p.path.name.split("-")[0] for p in sets) == ["test", "train", "val"]
    x = torch.cat([ts.x_T(range(ts.num_samples)) for ts in sets]).flatten(1)
    assert torch.unique(x, dim=0).shape[0] == x.shape[0]


def test_rerun_recomputes_nothing(tiny, capsys):
    out, res = tiny
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert bd.main(_args(out)) == 0
    res2 = json.loads(capsys.readouterr().out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps  # nothing retrained or resampled
    assert res2["table"] == res["table"] and res2["comparisons"] == res["comparisons"]


def test_moved_output_folder_recomputes_nothing(tiny, tmp_path, capsys):
    """Run specs name their warm start by run folder, not by path: a copied or renamed output folder is reused."""
    import shutil

    out, res = tiny
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # copy2 keeps modification stamps
    stamps = {p.relative_to(moved): p.stat().st_mtime_ns for p in moved.rglob("*.safetensors")}
    assert bd.main(_args(moved)) == 0
    res2 = json.loads(capsys.readouterr().out)
    assert {p.relative_to(moved): p.stat().st_mtime_ns for p in moved.rglob("*.safetensors")} == stamps
    assert res2["table"] == res["table"]


def test_experiment_adopts_a_run_stored_under_an_older_spelling(tmp_path):
    from indis.experiment import Experiment, ExperimentConfig

    e = Experiment(tmp_path, bd.load_handle("zoo:digits", None), ExperimentConfig(model="zoo:digits", seed=0,
                   sizes={"train": 4, "val": 2, "test": 2}), progress=False)
    old, new, other = ({"method": "indis", "warm": w} for w in ("/abs/path/god-1", "god-1", "god-2"))
    (e.run_dir(old) / "disc").mkdir()
    e.adopt(new, [old])
    assert not e.run_path(old).exists() and (e.run_path(new) / "disc").is_dir()
    assert json.loads((e.run_path(new) / "spec.json").read_text())["spec"] == new
    (e.run_dir(old) / "train").mkdir()  # a folder with work of its own is never replaced
    e.adopt(new, [old])
    assert e.run_path(old).exists() and not (e.run_path(new) / "train").exists()
    e.adopt(other, [{"method": "indis", "warm": "god-9"}])  # nothing stored under that spelling: nothing happens
    assert not e.run_path(other).exists()


@pytest.mark.parametrize("argv,needle", [(["--guidance", "4"], "class-conditional"), (["--model", "zoo:digits-cond", "--guidance", "-1"], "--guidance"),
                                          (["--nfe", "1"], "--nfe"), (["--nfe", "3", "--ipndm-nfes", "5"], "--ipndm-nfes"),
                                          (["--model", "zoo:cifar"], "invalid choice")])
def test_bad_settings_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    assert main(["bench", "digits", "--out", str(tmp_path), "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_guided_teacher_is_cfg_by_hand():
    h = bd.load_handle("zoo:digits-cond", 4.0)
    fn = h.denoiser.model
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(4, 1, 8, 8, generator=g) * 80, torch.tensor([0, 3, 7, 9])
    times = torch.tensor([80.0, 5.0, 0.5, 0.002], dtype=torch.float64)
    out = __import__("indis").sample(h.denoiser, x, times, solver="euler", cond=labels)
    ref = x.clone()
    for i in range(3):
        t = torch.full((4,), float(times[i]))
        c, u = fn(ref, t, labels), fn(ref, t, torch.full((4,), 10))  # label 10: the learned null class
        d = (ref - (u + 4.0 * (c - u))) / times[i]
        ref = ref + (times[i + 1] - times[i]) * d
    # float32 model, the same calls in another order (batched vs separate): rounding-level differences only
    torch.testing.assert_close(out, ref.float(), rtol=1e-4, atol=1e-4)


class _FakeRun:
    """Per-prior rows for the report code: features and MSE drawn per (seed, method) so every number is known."""

    def __init__(self, seed):
        self.seed, self.real_all = seed, np.random.default_rng([seed, 99]).normal(size=(40, 3))
        self.real_heldout = self.real_all[:20]

    def rows(self, spec):
        g = np.random.default_rng([self.seed, rep.ROWS.index(spec["method"]), spec["nfe"]])
        return {"features": g.normal(size=(30, 3)), "mse": g.uniform(size=30)}

    def teacher_features(self):
        return self.real_all


def _seed_result(seed, nfes, ipndm_nfes, replicates=10):
    def row(m, n):
        return {"test": {"fd": 1.0 + seed, "mse": 0.1}, "train": {"seconds": 1.0},
                "spec": {"method": m, "nfe": n, "solver": "ipndm", "afs": False, "steps": n}}
    table = lambda n: {m: row(m, n) for m in rep.ROWS}  # noqa: E731
    res = {"seed": seed, "main": {str(n): table(n) for n in nfes},
           "ipndm": {str(n): table(n) if n in ipndm_nfes else None for n in nfes}, "oracle": {}, "ablations": {}}
    res["evidence"] = rep.seed_evidence(_FakeRun(seed), res, replicates)
    return res


def test_partial_tables_are_reported_for_the_seeds_and_nfes_that_have_them():
    seeds = [_seed_result(0, [3, 5], ipndm_nfes=[3]), _seed_result(1, [3, 5], ipndm_nfes=[])]
    res = rep.aggregate(seeds, [3, 5])
    assert set(res["table"]["god"]) == {"3", "5"} and res["table"]["god"]["5"]["seeds"] == 2
    assert res["table"]["god"]["3"]["fd"] == pytest.approx(1.5)  # mean of the two seeds' stored FDs (1.0, 2.0)
    assert set(res["table_ipndm"]["god"]) == {"3"} and res["table_ipndm"]["god"]["3"]["seeds"] == 1
    lines = rep.table_md(res["table_ipndm"], [3, 5], "iPNDM only", cond=False)
    assert sum(line.startswith("| GOD |") for line in lines) == 1  # NFE 3 only: no row for the NFE nobody ran
    assert "held-out 297" in lines[2] and "held-out 6000" in rep.table_md(res["table"], [3], "t", False, 6000)[2]
    # a seed that ran NFE 3 only counts at NFE 3 only, and the report says which seeds each NFE pools
    seeds.append(_seed_result(2, [3], ipndm_nfes=[]))
    res = rep.aggregate(seeds, [3, 5])
    assert res["seeds_per_nfe"] == {"3": [0, 1, 2], "5": [0, 1]} and res["table"]["god"]["5"]["seeds"] == 2
    assert len(res["comparisons"]["3"]["vs"]["god"]["fd"]["per_seed"]) == 3


def test_evidence_pools_the_intervals_of_a_joint_bootstrap():
    """Per-seed evidence reproduces the joint paired bootstrap: with one seed and the same stream, exactly (same draws
    in the same order); the per-seed point differences are the FDs of the fake rows computed directly."""
    from indis.metrics.stats import (fd_reference, paired_bootstrap_many, pooled_interval, seed_replicates, seed_stream,
                                     weighted_fd)

    r = _seed_result(4, [3], ipndm_nfes=[])
    run = _FakeRun(4)
    feats = {m: run.rows({"method": m, "nfe": 3})["features"] for m in rep.ROWS}
    joint = paired_bootstrap_many(weighted_fd, [feats["indis"]], {"god": [feats["god"]]}, [run.real_all], replicates=10,
                                  prepare=fd_reference, seed=0)["god"]
    # the joint routine draws seed index 0 from seed_stream(0, 0); give the evidence the same stream to compare draws
    ev = seed_replicates(weighted_fd, {"indis": feats["indis"], "god": feats["god"]}, run.real_all,
                         seed_stream(0, 0), replicates=10, prepare=fd_reference)
    pooled = pooled_interval([ev], "indis", "god")
    # same draws, same formulas: float64 rounding only
    np.testing.assert_allclose(pooled["ci"], joint["ci"], rtol=1e-12)
    assert pooled["diff"] == pytest.approx(joint["diff"], rel=1e-12)
    c = rep.compare([r], "main", "3", "indis", ["god"], "fd")["god"]
    assert c["diff"] == pytest.approx(weighted_fd(feats["indis"], np.ones(30), run.real_all)
                                      - weighted_fd(feats["god"], np.ones(30), run.real_all), rel=1e-9)
    # each (seed, table, NFE, metric) has its own stream: other seeds and other NFEs draw other replicates
    draws = {(sd, n): rep._stream(sd, "main", n, "fd").integers(0, 2**31, 4).tolist() for sd in (0, 1) for n in (3, 5)}
    assert len({tuple(v) for v in draws.values()}) == 4


def test_loss_option_reaches_every_training_run_and_keeps_default_specs(tmp_path):
    import indis
    from indis.bench.digits_run import DigitsRun

    h = indis.load_model("zoo:digits")
    runs = {}
    for loss in ("mse", "digits-perceptual"):
        s = bd.settings_from_args(_args(tmp_path / loss, ["--loss", loss]))
        runs[loss] = DigitsRun(s, 0, tmp_path / loss, h, progress=False)
    mse, perc = runs["mse"], runs["digits-perceptual"]
    for method in ("god", "ld3", "indis"):
        # the default spec has no loss entry: runs cached before the option existed keep their folders
        assert "loss" not in mse.spec(method, 3, "ipndm", False)["train"]
        # the first learning rate of the choice is the one-rate spec: runs cached before the choice stay valid
        assert mse.spec(method, 3, "ipndm", False, lr=bd.LR[method]) == mse.spec(method, 3, "ipndm", False)
        assert perc.spec(method, 3, "ipndm", False)["train"]["loss"] == "digits-perceptual"
        assert mse.train_cfg(method).loss == "mse" and perc.train_cfg(method).loss == "digits-perceptual"
    for method, loss in (("amed", "mse"), ("epd", "digits-features")):  # their references' losses whatever --loss says
        for run in (mse, perc):
            assert run.spec(method, 3, "ipndm", True)["train"]["loss"] == loss and run.train_cfg(method).loss == loss
    assert bd.default_out({**perc.s, "quick": False}).name == "bench-digits-digits-perceptual"
    assert bd.default_out({**mse.s, "quick": False}).name == "bench-digits"
    # every guidance scale of every model gets its own folder (a glyphs run at G = 2 used to land in G = 1's)
    names = {bd.default_out({**mse.s, "model": m, "cond": c, "guidance": g, "quick": False}).name
             for m, c in (("zoo:digits-cond", True), ("zoo:glyphs", True)) for g in (None, 2.0, 4.0)}
    assert names == {"bench-digits-cond", "bench-digits-cond-g2", "bench-digits-cond-g4", "bench-glyphs", "bench-glyphs-g2",
                     "bench-glyphs-g4"}


def test_verdict_bold_line_and_win_follow_one_rule(monkeypatch):
    """A baseline whose pooled CI lies above 0 while one seed disagrees gets no verdict anywhere in the report."""
    def cmp(diff, ci, per_seed):
        return {"diff": diff, "ci": ci, "per_seed": per_seed, "excludes_zero": ci[0] > 0 or ci[1] < 0,
                "all_seeds_agree": all((p > 0) == (diff > 0) for p in per_seed)}
    fd = {b: cmp(-1.0, [-1.5, -0.5], [-1.0, -1.0, -1.0]) for b in rep.BASELINES}
    fd["dmn"] = cmp(2.0, [1.8, 2.3], [2.0, 2.1, 1.9])    # ahead of INDIS in every seed
    fd["god"] = cmp(0.09, [0.02, 0.14], [-0.02, 0.07, 0.22])  # pooled CI above 0, seed 0 the other way
    monkeypatch.setattr(rep, "compare", lambda *a, **k: {b: fd[b] for b in rep.BASELINES})
    table = {r: {"7": {"fd": 5.0}} for r in rep.ROWS} | {"dmn": {"7": {"fd": 2.5}}}
    c = rep._comparisons(None, table, "7")
    assert c["best_baseline"] == "dmn" and not c["win"]
    assert c["beaten_by"] == ["dmn"] and c["ahead_pooled_only"] == ["god"]
    lines = rep.comparisons_md({"comparisons": {"7": c}}, [7])
    verdicts = {ln.split(" | ")[1].replace(" (strongest)", ""): ln.split(" | ")[-1].rstrip(" |") for ln in lines
                if ln.startswith("| 7 |")}
    assert verdicts["DMN"] == "baseline better" and verdicts["GOD"] == "no significant difference"
    assert "- **NFE 7: DMN beats INDIS on FD beyond the interval.**" in lines
    assert any(ln.startswith("- NFE 7: GOD ahead of INDIS") and "not in every seed" in ln for ln in lines)


def test_default_output_is_the_report_not_json(tiny, capsys):
    """Without --json the (cached) rerun prints the markdown report for people."""
    out, _ = tiny
    args = _args(out)
    args.json = False
    assert bd.main(args) == 0
    text = capsys.readouterr().out
    with pytest.raises(ValueError):
        json.loads(text)
    assert "# indis bench digits" in text and "| INDIS |" in text


def test_bench_solvers_prints_a_summary_or_json(capsys):
    assert main(["bench", "solvers", "--batch", "2", "--size", "4"]) == 0
    text = capsys.readouterr().out
    with pytest.raises(ValueError):
        json.loads(text)
    assert "overhead" in text and "backprop peak extra memory" in text


def test_guidance_is_chosen_on_validation_by_the_teachers_fd(tmp_path):
    from indis.errors import InputError

    s = bd.settings_from_args(_args(tmp_path, ["--model", "zoo:digits-cond"]))
    fd = bd.choose_guidance(s, [1.5, 3.0], tmp_path, progress=False)
    assert set(fd) == {1.5, 3.0} and all(v > 0 for v in fd.values())
    with pytest.raises(InputError, match="class-conditional"):
        bd.choose_guidance(bd.settings_from_args(_args(tmp_path)), [2.0], tmp_path, progress=False)
    assert main(["bench", "digits", "--model", "zoo:digits-cond", "--guidance", "2", "--choose-guidance", "2", "3",
                 "--out", str(tmp_path / "x")]) == 2


def test_each_model_family_gets_its_own_sizes(tmp_path):
    """zoo:glyphs costs ~8-12x zoo:digits per sample: its full and quick presets are smaller, NFE 3 and 5 by default;
    explicit options still win, and digits keeps its sizes."""
    p = argparse.ArgumentParser()
    bd.add_arguments(p)
    digits = bd.settings_from_args(p.parse_args(["--out", str(tmp_path)]))
    glyphs = bd.settings_from_args(p.parse_args(["--out", str(tmp_path), "--model", "zoo:glyphs"]))
    quick = bd.settings_from_args(p.parse_args(["--out", str(tmp_path), "--model", "zoo:glyphs", "--quick"]))
    assert (digits["train"], digits["nfes"]) == (bd.FULL["train"], [3, 5, 7])
    assert (glyphs["train"], glyphs["nfes"], glyphs["batch"]) == (3000, [3, 5], 32)
    assert "split_bases" not in glyphs  # AMED/EPD get every base schedule the digits protocol gives them
    assert (quick["train"], quick["nfes"]) == (200, [3]) and quick["train"] < bd.QUICK["train"]
    # full sizes choose GOD's and INDIS's learning rates on validation; quick trains each at one rate (its time budget)
    assert digits["rates"] == glyphs["rates"] == {"god": [5e-2, 5e-3], "indis": [1e-3, 1e-4]} and quick["rates"] == {}
    assert [digits["lr"][m] for m in ("god", "indis")] == [bd.LR["god"], bd.LR["indis"]]
    mine = bd.settings_from_args(p.parse_args(["--out", str(tmp_path), "--model", "zoo:glyphs", "--nfe", "7",
                                               "--num-train", "500"]))
    assert (mine["train"], mine["nfes"], mine["oracle_nfes"]) == (500, [7], [])


def _settings(**kw):
    return {"model": "zoo:digits", "guidance": None, "train": 96, "replicates": 10, "seeds": [0], "nfes": [3]} | kw


def test_pool_merges_seeds_and_nfes_run_apart_like_one_run(tmp_path):
    """Seed 0 with NFE 3 and 5 in one file, or NFE 3 and NFE 5 in two files, pools to the same tables and intervals;
    the same seed and NFE twice, other settings, or a file without evidence are refused with the file named."""
    from indis.bench import pool
    from indis.errors import InputError

    def doc(seed, ran, **kw):
        d = _seed_result(seed, ran, ipndm_nfes=[]) | {"settings": _settings(**kw), "real_heldout": 40}
        d["_path"] = f"seed-{seed}-{ran}"
        return d

    joint = rep.aggregate(pool.merge([doc(0, [3, 5]), doc(1, [3, 5])]), [3, 5])
    split = pool.merge([doc(0, [3]), doc(1, [3, 5]), doc(0, [5])])
    assert [d["seed"] for d in split] == [0, 1] and pool.settings_of(split)["nfes"] == [3, 5]
    apart = rep.aggregate(split, [3, 5])
    for n in ("3", "5"):
        for b in rep.BASELINES:
            assert apart["comparisons"][n]["vs"][b]["fd"] == joint["comparisons"][n]["vs"][b]["fd"]
        assert apart["table"]["indis"][n]["fd_ci"] == joint["table"]["indis"][n]["fd_ci"]
    with pytest.raises(InputError, match="seed 0 NFE 3"):
        pool.merge([doc(0, [3]), doc(0, [3, 5])])
    with pytest.raises(InputError, match="other settings.*train"):
        pool.check_compatible([doc(0, [3]), doc(1, [3], train=200)])
    pool.check_compatible([doc(0, [3]), doc(1, [5], seeds=[1], nfes=[5])])  # what ran may differ, how may not
    (tmp_path / "pooled.json").write_text(json.dumps({"table": {}}))
    with pytest.raises(InputError, match="not a per-seed result with bootstrap evidence"):
        pool.load([str(tmp_path / "pooled.json")])


def test_bench_pool_of_a_runs_own_seed_files_reproduces_its_report(tiny, tmp_path, capsys):
    out, res = tiny
    assert main(["bench", "pool", str(out / "seed-0"), "--out", str(tmp_path / "pooled"), "--json"]) == 0
    pooled = json.loads(capsys.readouterr().out)
    assert pooled["table"] == res["table"] and pooled["comparisons"] == res["comparisons"]
    assert pooled["ablations"] == res["ablations"] and pooled["oracle"] == res["oracle"]
    assert (tmp_path / "pooled" / "results.md").read_text() == (out / "results.md").read_text()
    assert main(["bench", "pool", str(out / "results.json"), "--out", str(tmp_path / "x")]) == 2  # the pooled file


def test_rows_split_over_calls_fill_the_same_cache_a_full_run_reuses(tiny, tmp_path, capsys):
    """--rows trains only the named rows (INDIS with its warm starts) under the run folders a full run uses, so a
    seed split over processes sharing --out is reported by one plain run that retrains nothing."""
    out, res = tiny
    split = tmp_path / "split"
    runs = lambda o: {p.name.rsplit("-", 1)[0] for p in (o / "seed-0" / "runs").iterdir()}  # noqa: E731
    assert bd.main(_args(split, ["--rows", "dmn", "gits"])) == 0
    assert runs(split) == {"dmn", "gits"} and not (split / "results.json").exists()
    assert bd.main(_args(split, ["--rows", "indis"])) == 0
    assert {"god", "ld3", "indis"} <= runs(split) and not runs(split) & {"amed", "epd", "edm", "uniform"}
    stamps = {p: p.stat().st_mtime_ns for p in split.rglob("*.safetensors")}
    capsys.readouterr()
    assert bd.main(_args(split)) == 0
    res2 = json.loads(capsys.readouterr().out)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the rows' work was reused, not redone
    names = lambda o: sorted(p.name for p in (o / "seed-0" / "runs").iterdir())  # noqa: E731
    assert names(split) == names(out)  # the same settings hashes as one uninterrupted run
    assert set(res2["table"]) == set(res["table"])


def test_rows_rejects_an_unknown_row(tmp_path, capsys):
    assert main(["bench", "digits", "--out", str(tmp_path), "--quick", "--rows", "god", "ldm3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows" in err[0] and "ldm3" in err[0], err


def test_digits_variant_study_without_a_finished_seed(tiny, tmp_path):
    """benchmarks/studies/digits_variant.py on a copy of the tiny bench whose seed has no results.json: from the bench
    arguments alone it finds the INDIS row and the plus-projected ablation the bench trained (the same runs: the same
    test means as the bench's own records, nothing retrained), and its pooled difference is the difference of the
    per-prior test means."""
    import importlib.util
    import shutil

    path = Path(__file__).parents[1] / "benchmarks" / "studies" / "digits_variant.py"
    spec = importlib.util.spec_from_file_location("digits_variant", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out, res = tiny
    shutil.copytree(out / "seed-0", tmp_path / "seed-0")
    seed_res = json.loads((tmp_path / "seed-0" / "results.json").read_text())
    (tmp_path / "seed-0" / "results.json").unlink()
    runs = sorted(p.name for p in (tmp_path / "seed-0" / "runs").iterdir())
    bench = [a for a in TINY if a not in ("--json", "--no-progress")]
    study.main(3, [(tmp_path, 0)], tmp_path / "pd.json", "plus-projected", bench)
    assert sorted(p.name for p in (tmp_path / "seed-0" / "runs").iterdir()) == runs  # nothing new trained
    rep_ = json.loads((tmp_path / "pd.json").read_text())
    means = rep_["per_seed"][0]["mse"]
    # same run, same priors; the bench's record is a float32 mean of the float32 rows the study averages in float64
    assert means["indis"] == pytest.approx(seed_res["main"]["3"]["indis"]["test"]["mse"], rel=1e-5)
    assert means["indis-pd"] == pytest.approx(seed_res["ablations"]["3"]["plus-projected"]["test"]["mse"], rel=1e-5)
    # the bootstrap's point estimate is the plain difference of means over the same priors: equal up to float64 rounding
    assert rep_["pooled"]["mse"]["indis-pd - indis"]["diff"] == pytest.approx(means["indis-pd"] - means["indis"],
                                                                              rel=1e-9, abs=1e-12)
