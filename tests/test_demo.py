"""`indis demo`: a tiny end-to-end run through the CLI writes a valid results.json (indis beats global at NFE 3),
report.md and the figures; a rerun reuses the cached teacher set and trained discretizations."""
import json
import math

import pytest
import torch

from indis.cli import main

TINY = ["--quick", "--nfe", "3", "--num-train", "500", "--num-val", "60", "--num-test", "250", "--god-iters", "40",
        "--indis-iters", "150", "--oracle-iters", "25", "--oracle-subset", "60", "--w2-points", "250",
        "--heuristic-points", "120", "--no-progress", "--threads", "1"]

FIGURES = ["fig2_endpoint_error.png", "fig3_metrics_vs_nfe.png", "samples_density.png", "timesteps_per_instance.png"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "--out", str(out), *TINY])
    assert rc == 0
    return out


def test_results_schema_and_indis_beats_global(tiny_run, capsys):
    res = json.loads((tiny_run / "results.json").read_text())
    assert set(res) == {"experiment", "results", "settings"}
    assert res["experiment"] == "toy-tree"
    rows = res["results"]
    for r in rows:
        assert set(r) == {"method", "nfe", "mse", "kl", "w2"}
        assert isinstance(r["method"], str) and r["nfe"] == 3
        assert all(isinstance(r[m], float) and math.isfinite(r[m]) for m in ("mse", "kl", "w2"))
        assert r["mse"] >= 0 and r["w2"] >= 0
    by = {r["method"]: r for r in rows}
    for m in ("uniform", "best-heuristic", "global", "instance-oracle", "indis"):
        assert m in by, m
    assert by["indis"]["mse"] < by["global"]["mse"]
    assert by["indis"]["w2"] < by["global"]["w2"]
    assert by["global"]["mse"] < by["uniform"]["mse"]
    s = res["settings"]
    assert s["classes"] == "A" and s["solver"] == "euler" and s["nfes"] == [3]
    assert s["best_heuristic"]["3"] in s["heuristic_mse"]["3"]


def test_report_and_figures(tiny_run):
    report = (tiny_run / "report.md").read_text()
    for f in FIGURES:
        p = tiny_run / f
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
        assert f"]({f})" in report
    assert "| indis |" in report and "50.2%" in report and "## Discussion" in report


def test_rerun_reuses_cached_work(tiny_run, capsys):
    before = json.loads((tiny_run / "results.json").read_text())
    assert main(["demo", "--out", str(tiny_run), *TINY]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("demo: indis vs global at NFE 3: MSE -") and "report.md" in line
    after = json.loads((tiny_run / "results.json").read_text())
    assert after["settings"]["training_seconds"] == {}  # nothing retrained
    assert [r["mse"] for r in after["results"]] == pytest.approx([r["mse"] for r in before["results"]], rel=1e-9)


def test_bad_arguments_fail_cleanly(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--solver", "nope", "--no-progress"]) == 2
    assert "unknown solver" in capsys.readouterr().err
