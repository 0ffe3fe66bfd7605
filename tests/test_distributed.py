"""torch.distributed (gloo, 2 processes via torchrun) gives the same teacher shards and the same training as one
process: the same sample indices in every shard, none missing or duplicated, and endpoints equal up to float32
rounding; DDP loss curves and final parameters match single-process training on the same global batch up to
float reassociation."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from fake_models import cli_env, indis_cmd, run_indis, wait_for  # noqa: E402

from indis.io import load_tensors  # noqa: E402
from indis.teacher import TeacherSet  # noqa: E402

MODEL = "python:fake_models:make_gmm"
TEACHER = ["--model", MODEL, "--num-samples", "48", "--steps", "12", "--shard-size", "8", "--batch-size", "8",
           "--seed", "3", "--no-progress"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


# Endpoints made in different processes are compared with a tolerance, never bit for bit: the fake model's float32
# posterior mean (~20 flops per call on O(1) values, relative rounding ~1e-7 each) over 12 iPNDM steps stays far
# below 1e-5 of the endpoint's scale, while a wrong prior or a skipped step moves endpoints by O(0.1).
def _same_endpoints(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(a.abs().max()))


def _shard_files(path):
    return sorted(p.name for p in path.iterdir())


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_teacher")
    run_indis("teacher", "--out", str(root / "single"), *TEACHER)
    r = run_indis("teacher", "--out", str(root / "ddp"), *TEACHER, nproc=2)
    return root / "single", root / "ddp", r


def test_torchrun_teacher_matches_single_process(teachers):
    single, ddp, r = teachers
    assert r.stdout.count("Teacher set ") == 1  # printed by rank 0 only
    expect = ["manifest.json"] + [f"shard-{k:05d}.safetensors" for k in range(6)]
    assert _shard_files(single) == expect
    assert _shard_files(ddp) == expect  # none missing, none extra, no temp files
    for k in range(6):
        a, _ = load_tensors(single / f"shard-{k:05d}.safetensors")
        b, _ = load_tensors(ddp / f"shard-{k:05d}.safetensors")
        assert torch.equal(a["index"], torch.arange(8 * k, 8 * k + 8))
        assert torch.equal(a["index"], b["index"])
        _same_endpoints(a["x0"], b["x0"])
    ts_a, ts_b = TeacherSet(single), TeacherSet(ddp)
    assert ts_a.config == ts_b.config
    _same_endpoints(ts_a.x0(), ts_b.x0())
    assert torch.isfinite(ts_a.x0()).all()



def test_torchrun_resumes_a_partial_teacher_set(teachers, tmp_path):
    """A set left half done (by any number of processes) is completed by 2 ranks; kept shards are not rewritten."""
    single, ddp, _ = teachers
    part = tmp_path / "part"
    part.mkdir()
    for name in ("manifest.json", "shard-00000.safetensors", "shard-00003.safetensors", "shard-00004.safetensors"):
        shutil.copy2(single / name, part / name)
    kept = {n: (part / n).stat().st_mtime_ns for n in ("shard-00000.safetensors", "shard-00003.safetensors")}
    run_indis("teacher", "--out", str(part), *TEACHER, nproc=2)
    assert _shard_files(part) == _shard_files(single)
    assert {n: (part / n).stat().st_mtime_ns for n in kept} == kept
    for name in _shard_files(single)[1:]:
        a, _ = load_tensors(part / name)
        b, _ = load_tensors(single / name)
        assert torch.equal(a["index"], b["index"]), name
        _same_endpoints(a["x0"], b["x0"])


def _train_args(teacher, method):
    return ["train", "--model", MODEL, "--teacher", str(teacher), "--method", method, "--steps", "3", "--iterations", "30",
            "--batch-size", "8", "--val-every", "10", "--ckpt-every", "4", "--dtype", "float64", "--no-progress", "--seed", "1",
            "--starts", "1", "--patience", "0"] + (["--lr", "1e-2"] if method == "god" else [])


@pytest.fixture(scope="module")
def single_runs(teachers, tmp_path_factory):
    """Single-process reference runs, one per method, made on first use."""
    root, done = tmp_path_factory.mktemp("single_runs"), {}

    def get(method):
        if method not in done:
            run_indis(*_train_args(teachers[0], method), "--out", str(root / method))
            done[method] = root / method
        return done[method]

    return get


@pytest.mark.parametrize("method,rtol", [("god", 1e-9), ("indis", 1e-4)])
def test_torchrun_ddp_training_matches_single_process(teachers, single_runs, tmp_path, method, rtol):
    single = single_runs(method)
    r = run_indis(*_train_args(teachers[0], method), "--out", str(tmp_path / "ddp"), nproc=2)
    assert r.stdout.count("best validation") == 1  # rank 0 prints the summary
    ha = json.loads((single / "history.json").read_text())
    hb = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert ha["world_size"] == 1 and hb["world_size"] == 2
    la = torch.tensor([h["loss"] for h in ha["history"] if "loss" in h], dtype=torch.float64)
    lb = torch.tensor([h["loss"] for h in hb["history"] if "loss" in h], dtype=torch.float64)
    assert len(la) == len(lb) == 30
    torch.testing.assert_close(lb, la, rtol=rtol, atol=1e-12)
    va = [h["val"] for h in ha["history"] if "val" in h]
    vb = [h["val"] for h in hb["history"] if "val" in h]
    assert len(va) == 4  # iterations 0 (the start), 10, 20, 30
    torch.testing.assert_close(torch.tensor(vb), torch.tensor(va), rtol=rtol, atol=1e-12)
    print(method, "validation losses", va)
    if method == "god":  # it did learn something (phi at lr 1e-3 moves too little in 30 steps to show in the loss)
        assert va[-1] < va[0]
    sa, ma = load_tensors(single / "train_state.safetensors")
    sb, mb = load_tensors(tmp_path / "ddp" / "train_state.safetensors")
    assert sa.keys() == sb.keys()
    params = [k for k in sa if k.startswith("model.")]
    assert params
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=rtol, atol=1e-7 if method == "indis" else 1e-12, msg=k)
    # the parameters moved away from the start (so equality is not trivial)
    assert any(not torch.equal(sa[k], torch.zeros_like(sa[k])) for k in params)
    assert (tmp_path / "ddp" / "best" / "model.safetensors").is_file()


def test_torchrun_ctrl_c_saves_on_all_ranks_and_resumes(teachers, single_runs, tmp_path):
    """SIGINT to torchrun (which forwards it to the workers): every rank stops at the same iteration, rank 0 saves
    exactly there, and a torchrun rerun finishes with the single-process result."""
    teacher = teachers[0]
    args = _train_args(teacher, "god")
    out = tmp_path / "ddp"
    p = subprocess.Popen(indis_cmd(*args, "--out", str(out), nproc=2), env=cli_env(FAKE_MODEL_DELAY="0.02"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if the runner ignores SIGINT
    try:
        assert wait_for(lambda: (out / "history.json").is_file(), p, timeout=90), p.communicate()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert err.count("indis: interrupted") == 2, err  # both ranks stopped cleanly (torchrun itself then reports the signal)
    _, md = load_tensors(out / "train_state.safetensors")
    k = json.loads(md["meta"])["iteration"]
    h = json.loads((out / "history.json").read_text())
    assert 4 <= k < 30 and h["iteration"] == k and len(h["history"]) == k + 1  # + the validation of the start
    assert not (out / "best").exists()
    run_indis(*args, "--out", str(out), nproc=2)
    sa, ma = load_tensors(single_runs("god") / "train_state.safetensors")
    sb, mb = load_tensors(out / "train_state.safetensors")
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-9, atol=1e-12, msg=key)
    la = [r["loss"] for r in json.loads(ma["meta"])["history"] if "loss" in r]
    lb = [r["loss"] for r in json.loads(mb["meta"])["history"] if "loss" in r]
    assert len(la) == len(lb) == 30
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-9, atol=1e-12)


def test_torchrun_designs_match_single_process(teachers, tmp_path):
    """--designs under DDP: each design trains as in one process (float64, same global batch: the validation losses
    agree to the reassociation tolerance of the INDIS case above) and rank 0 alone prints and saves the choice."""
    args = [*_train_args(teachers[0], "indis"), "--designs", "indis", "indis-d", "--json"]
    ra = json.loads(run_indis(*args, "--out", str(tmp_path / "single")).stdout)["designs"]
    rb = json.loads(run_indis(*args, "--out", str(tmp_path / "ddp"), nproc=2).stdout)["designs"]
    assert [r["design"] for r in rb] == ["indis", "indis-d"]
    torch.testing.assert_close(torch.tensor([r["best_val"] for r in rb]), torch.tensor([r["best_val"] for r in ra]),
                               rtol=1e-4, atol=1e-12)
    va, vb = (sorted(r["best_val"] for r in rows) for rows in (ra, rb))
    if va[1] > va[0] * (1 + 1e-3):  # a clear winner: both runs must keep it
        assert [r["chosen"] for r in rb] == [r["chosen"] for r in ra]
    from indis.discretizations.base import load_discretization

    chosen = next(r["design"] for r in rb if r["chosen"])
    assert load_discretization(tmp_path / "ddp" / "best").extra["design"] == chosen
