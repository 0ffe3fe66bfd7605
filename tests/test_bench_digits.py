"""`indis bench digits` in miniature: a tiny table-1 run on the shipped zoo:digits model (a few hundred teacher
pairs, tiny phi, NFE 3): valid results.json / results.md with every row and column, INDIS beats the EDM rho=7
heuristic on teacher-MSE over held-out priors, and a rerun reuses the cached artifacts."""
import argparse
import json
import time

import pytest
import torch

from indis.bench import digits as bd



TINY = ["--nfe", "3", "--num-teacher", "300", "--num-eval", "200", "--iters", "60", "--batch", "32", "--gits-warmup", "32",
        "--afs", "off", "--phi-hidden", "32", "--phi-channels", "8", "--eval-batch", "200", "--no-progress", "--json"]


def _args(out, extra=()):
    p = argparse.ArgumentParser()
    bd.add_arguments(p)
    return p.parse_args(["--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-digits")
    t0 = time.perf_counter()
    assert bd.main(_args(out)) == 0
    first = time.perf_counter() - t0
    res = json.loads((out / "results.json").read_text())
    return out, res, first


def test_results_have_every_row_and_column(tiny):
    out, res, _ = tiny
    assert res["benchmark"] == "digits" and res["model"] == "zoo:digits" and res["nfes"] == [3]
    assert set(res["table"]) == set(bd.ROWS)
    for row in bd.ROWS:
        cell = res["table"][row]["3"]
        if row == "amed":
            assert cell["status"] == "missing" and "fd" not in cell  # no invented numbers
            continue
        for col in ("fd", "kid", "kid_std", "mse", "tuning_s", "afs", "steps"):
            assert col in cell, (row, col)
        assert cell["fd"] >= 0 and cell["mse"] >= 0 and cell["steps"] == 3 and cell["afs"] is False
    bh = res["table"]["best-heuristic"]["3"]
    assert bh["heuristic"] in bd.HEURISTIC_CANDIDATES and set(bh["candidates_fd"]) == set(bd.HEURISTIC_CANDIDATES)
    assert bh["fd"] == min(bh["candidates_fd"].values()) or abs(bh["fd"] - min(bh["candidates_fd"].values())) < 1e-3
    assert res["table"]["indis"]["3"]["tuning_s"] > res["table"]["god"]["3"]["tuning_s"] > 0  # INDIS includes its GOD warm start
    m = res["margins"]["3"]
    assert m["target"] == 0.35 and m["best_paper_baseline"] in bd.BASELINES_PAPER and "reduction_incl_god" in m
    md = (out / "results.md").read_text()
    for label in ("Best heuristic", "DMN", "GITS", "LD3", "GOD", "AMED", "INDIS", "FD-digits", "KID", "Teacher-MSE", "Tuning time"):
        assert label in md
    assert "| AMED | missing |" in md and "not FID" in md


def test_tiny_phi_beats_edm_heuristic_on_teacher_mse(tiny):
    _, res, _ = tiny
    edm = res["raw"]["edm|nfe3|noafs"]["mse"]
    ind = res["table"]["indis"]["3"]["mse"]
    assert ind < 0.8 * edm, (ind, edm)


def test_rerun_reuses_cached_artifacts(tiny, capsys):
    out, res, first = tiny
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("weights.safetensors")}
    t0 = time.perf_counter()
    assert bd.main(_args(out)) == 0
    second = time.perf_counter() - t0
    res2 = json.loads(capsys.readouterr().out)
    assert res2["table"] == res["table"] and res2["raw"] == res["raw"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("weights.safetensors")} == stamp  # nothing retrained


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="nfe"):
        bd.main(_args(tmp_path, ["--nfe", "0"]))
