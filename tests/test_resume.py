"""Never lose work: `indis teacher` and `indis train` killed with SIGKILL mid-run resume to exactly the result of an
uninterrupted run (no shard missing or duplicated, no temp file left as a shard); Ctrl-C (SIGINT) stops cleanly
after saving, exits 130, and a rerun completes to the same result."""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import cli_env, popen_indis, run_indis, wait_for  # noqa: E402

from indis.io import load_tensors  # noqa: E402

MODEL = "python:fake_models:make_gmm"
NUM, SHARD = 64, 8
TEACHER = ["--model", MODEL, "--num-samples", str(NUM), "--steps", "10", "--shard-size", str(SHARD), "--batch-size", "8",
           "--seed", "5", "--no-progress"]
SHARDS = [f"shard-{k:05d}.safetensors" for k in range(NUM // SHARD)]
SLOW = cli_env(FAKE_MODEL_DELAY="0.03")  # ~0.3 s per shard, ~0.1 s per training iteration


@pytest.fixture(scope="module")
def ref_teacher(tmp_path_factory):
    """An uninterrupted teacher run (also the teacher set of the training tests)."""
    ref = tmp_path_factory.mktemp("ref_teacher") / "teacher"
    run_indis("teacher", "--out", str(ref), *TEACHER)
    return ref


def _shards(path):
    return sorted(p.name for p in path.glob("shard-*.safetensors"))


def _same_teacher(a, b):
    # bit-exact on purpose: a killed-and-resumed run and an uninterrupted one execute the same code on the same
    # machine, inputs and thread count, so any difference at all means a shard was lost, redone or mixed up
    assert _shards(a) == _shards(b) == SHARDS
    for name in SHARDS:
        ta, _ = load_tensors(a / name)
        tb, _ = load_tensors(b / name)
        assert torch.equal(ta["index"], tb["index"]) and torch.equal(ta["x0"], tb["x0"]), name


def test_teacher_sigkill_then_resume_equals_uninterrupted(tmp_path, ref_teacher):
    ref, out = ref_teacher, tmp_path / "killed"
    p = popen_indis("teacher", "--out", str(out), *TEACHER, env=SLOW)
    try:
        assert wait_for(lambda: len(_shards(out)) >= 1, p), p.communicate()
        p.send_signal(signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL
    finally:
        p.kill()
        p.communicate()
    done = _shards(out)
    assert 1 <= len(done) < len(SHARDS), done  # killed mid-run
    for name in done:  # every shard on disk is complete and readable (atomic writes)
        load_tensors(out / name)
    # a temp file from a write cut short by the kill is never taken for a shard, and resume clears it
    (out / ".shard-00007.safetensors.abc123.tmp").write_bytes(b"partial")
    r = run_indis("teacher", "--out", str(out), *TEACHER, "--json")
    assert __import__("json").loads(r.stdout)["complete"] is True
    _same_teacher(ref, out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + SHARDS  # no temp files, no duplicates


def test_teacher_ctrl_c_exits_130_and_rerun_completes(tmp_path, ref_teacher):
    ref, out = ref_teacher, tmp_path / "int"
    p = popen_indis("teacher", "--out", str(out), *TEACHER, env=SLOW)
    try:
        assert wait_for(lambda: len(_shards(out)) >= 1, p), p.communicate()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert 1 <= len(_shards(out)) < len(SHARDS)
    run_indis("teacher", "--out", str(out), *TEACHER)
    _same_teacher(ref, out)
    assert not list(out.glob(".*.tmp"))


TRAIN = ["--model", MODEL, "--method", "god", "--steps", "3", "--iterations", "40", "--batch-size", "8",
         "--val-every", "10", "--ckpt-every", "5", "--dtype", "float64", "--no-progress", "--seed", "2", "--starts", "1",
         "--patience", "0"]


@pytest.fixture(scope="module")
def ref_train(tmp_path_factory, ref_teacher):
    """An uninterrupted training run on the reference teacher set."""
    ref = tmp_path_factory.mktemp("ref_train") / "god"
    run_indis("train", "--teacher", str(ref_teacher), "--out", str(ref), *TRAIN)
    return ref


def _ckpt_iter(out):
    f = out / "train_state.safetensors"
    if not f.is_file():
        return 0
    _, md = load_tensors(f)
    return json.loads(md["meta"])["iteration"]


def _same_training(a, b):
    ta, ma = load_tensors(a / "train_state.safetensors")
    tb, mb = load_tensors(b / "train_state.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k  # bit-exact: data order, optimizer state and lr all resume exactly
    ja, jb = json.loads(ma["meta"]), json.loads(mb["meta"])
    assert ja["iteration"] == jb["iteration"] == 40
    assert ja["history"] == jb["history"] and len(ja["history"]) == 41  # iterations 0 (validation of the start) to 40
    wa, _ = load_tensors(a / "best" / "model.safetensors")
    wb, _ = load_tensors(b / "best" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_sigkill_then_resume_equals_uninterrupted(tmp_path, ref_teacher, ref_train):
    t, ref, out = ref_teacher, ref_train, tmp_path / "killed"
    p = popen_indis("train", "--teacher", str(t), "--out", str(out), *TRAIN, env=SLOW)
    try:
        assert wait_for(lambda: (out / "train_state.safetensors").is_file(), p), p.communicate()
        p.send_signal(signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL
    finally:
        p.kill()
        p.communicate()
    k = _ckpt_iter(out)
    assert 5 <= k < 40 and k % 5 == 0, k
    assert not (out / "best").exists()
    run_indis("train", "--teacher", str(t), "--out", str(out), *TRAIN)
    _same_training(ref, out)
    hist = json.loads((out / "history.json").read_text())
    assert hist["iteration"] == 40 and len(hist["history"]) == 41


def test_train_ctrl_c_saves_exits_130_and_rerun_completes(tmp_path, ref_teacher, ref_train):
    t, ref, out = ref_teacher, ref_train, tmp_path / "int"
    p = popen_indis("train", "--teacher", str(t), "--out", str(out), *TRAIN, env=SLOW)
    try:
        assert wait_for(lambda: (out / "train_state.safetensors").is_file(), p), p.communicate()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    k = _ckpt_iter(out)
    assert 5 <= k < 40, k
    hist = json.loads((out / "history.json").read_text())
    assert hist["iteration"] == k and len(hist["history"]) == k + 1  # saved exactly where it stopped
    run_indis("train", "--teacher", str(t), "--out", str(out), *TRAIN)
    _same_training(ref, out)
