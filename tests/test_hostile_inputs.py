"""Hostile and wrong input through the CLI: each case gives ONE line `indis: error: ...` that names the problem and
the fix, exit code 2, no traceback (unless --debug), and leaves every file already written byte-for-byte intact.

Bad inputs covered: BAD_INPUTS below (30; 29 when running as root, where chmod cannot make a folder unwritable).
1-3 corrupt / truncated teacher shards (train, teacher resume); 4 truncated training checkpoint; 5 corrupt manifest;
6-8 discretization for another N / another data shape / corrupt weights; 9 training run resumed with another N;
10-12 teacher set from another model / for another shape / not a teacher set; 13 teacher resume with other settings;
14-15 non-monotone schedule (CLI file, Python API); 16-17 NaN / Inf from the model; 18-20 empty prompt list (CLI,
API dict with zero rows, empty dict); 21-22 missing optional dependency (python: model, diffusers: spec);
23-25 out-of-range NFE (--steps 0 / 100000 in sample, train, teacher); 26-28 unwritable output (under a file for
teacher and train, a file in place of the folder); 29 chmod 0o500 folder (non-root only); 30 pickle without
--trust-pickle. Plus: a real process gives exit 2 with one line, and --debug shows the traceback."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import cli_env, make_gmm, run_indis  # noqa: E402

import indis  # noqa: E402
from indis.cli import main  # noqa: E402
from indis.errors import InputError  # noqa: E402
from indis.teacher import CondSpec  # noqa: E402

GMM = "python:fake_models:make_gmm"
TEACHER = ["--num-samples", "24", "--steps", "8", "--shard-size", "8", "--batch-size", "8", "--no-progress"]
TRAIN = ["--method", "god", "--steps", "3", "--iterations", "6", "--batch-size", "8", "--val-every", "3", "--starts", "1",
         "--ckpt-every", "3", "--no-progress"]
BAD_INPUTS = 30  # distinct bad inputs exercised below (see the numbered comments)


def _run(argv, capsys):
    with torch.random.fork_rng():
        rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _snapshot(*dirs):
    snap = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                snap[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def bad(capsys, argv, *needles, keep=()):
    """Run the CLI in-process; check exit 2, one error line containing every needle, no traceback, files intact."""
    before = _snapshot(*keep)
    rc, out, err = _run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("indis: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    assert _snapshot(*keep) == before, "a file that was already written changed"
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good teacher set and a trained GOD discretization (N=3) to damage copies of."""
    root = tmp_path_factory.mktemp("hostile")
    with torch.random.fork_rng():
        assert main(["teacher", "--model", GMM, "--out", str(root / "teacher"), *TEACHER]) == 0
        assert main(["train", "--model", GMM, "--teacher", str(root / "teacher"), "--out", str(root / "god"), *TRAIN]) == 0
    return root


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# 1-3: corrupt (random bytes) and truncated teacher shards
def test_corrupt_and_truncated_shards(world, tmp_path, capsys):
    t = _copy(world / "teacher", tmp_path / "teacher")
    shard = t / "shard-00001.safetensors"
    shard.write_bytes(os.urandom(shard.stat().st_size))
    msg = bad(capsys, ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o"), *TRAIN],
              "shard-00001.safetensors", "corrupt", "delete", keep=[t])
    # resuming generation refuses too, and names the shard and the fix
    bad(capsys, ["teacher", "--model", GMM, "--out", str(t), *TEACHER], "shard-00001.safetensors", "corrupt",
        "delete that file and rerun", keep=[t])
    good = (world / "teacher" / "shard-00002.safetensors").read_bytes()
    (t / "shard-00002.safetensors").write_bytes(good[: len(good) // 2])
    shard.write_bytes((world / "teacher" / "shard-00001.safetensors").read_bytes())
    bad(capsys, ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o"), *TRAIN],
        "shard-00002.safetensors", "truncated", keep=[t])
    assert not (tmp_path / "o" / "train_state.safetensors").exists() and msg


# 4-5: a truncated training checkpoint; a corrupt manifest
def test_truncated_checkpoint_and_corrupt_manifest(world, tmp_path, capsys):
    g = _copy(world / "god", tmp_path / "god")
    f = g / "train_state.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(g), *TRAIN],
        "train_state.safetensors", "truncated", keep=[g, world / "teacher"])
    t = _copy(world / "teacher", tmp_path / "teacher")
    (t / "manifest.json").write_text('{"format": "indis-teacher", "config": {')
    bad(capsys, ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o"), *TRAIN],
        "manifest.json", "not valid JSON", keep=[t])


# 6-9: a saved discretization that is corrupt, for another N, for another data shape; a run for another N
def test_discretization_for_another_n_or_shape(world, tmp_path, capsys):
    d = world / "god" / "best"
    keep = [world / "god"]
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(d), "--steps", "5", "--out", str(tmp_path / "s")],
        "N=3", "N=5", keep=keep)
    bad(capsys, ["sample", "--model", "python:fake_models:make_image", "--discretization", str(d), "--out", str(tmp_path / "s")],
        "shape", "[3]", "[1, 4, 4]", keep=keep)
    c = _copy(d, tmp_path / "corrupt")
    (c / "model.safetensors").write_bytes(os.urandom(300))
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(c), "--out", str(tmp_path / "s")],
        "model.safetensors", "corrupt", keep=[c])
    # resuming a training run with another N in the same folder
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(world / "god"),
                 *[a if a != "3" else "4" for a in TRAIN[:4]], *TRAIN[4:]], "other settings", "steps 3 (not 4)",
        "another --out", keep=keep)


# 10-12: a teacher set from another model / for another data shape / not a teacher set
def test_teacher_from_another_model(world, tmp_path, capsys):
    keep = [world / "teacher"]
    bad(capsys, ["train", "--model", "python:fake_models:make_other", "--teacher", str(world / "teacher"),
                 "--out", str(tmp_path / "o"), *TRAIN], "generated by a different model", "generate a teacher set", keep=keep)
    bad(capsys, ["train", "--model", "python:fake_models:make_image", "--teacher", str(world / "teacher"),
                 "--out", str(tmp_path / "o"), *TRAIN], "shape", keep=keep)
    (tmp_path / "empty").mkdir()
    bad(capsys, ["train", "--model", GMM, "--teacher", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TRAIN],
        "not an indis teacher set", "indis teacher --out")


# 13: resuming a teacher set with other settings
def test_teacher_resume_with_other_settings(world, capsys):
    bad(capsys, ["teacher", "--model", GMM, "--out", str(world / "teacher"), *TEACHER[:-1], "--seed", "9", "--no-progress"],
        "different settings", "seed", "another --out", keep=[world / "teacher"])


# 14-15: a non-monotone user schedule (saved discretization file edited by hand; Python API)
def test_non_monotone_schedule(world, tmp_path, capsys):
    rc, out, err = _run(["schedule", "--model", GMM, "--method", "edm", "--steps", "3", "--out", str(tmp_path / "fixed")], capsys)
    assert rc == 0, err
    cfg = json.loads((tmp_path / "fixed" / "config.json").read_text())
    cfg["kwargs"]["times"] = [80.0, 1.0, 5.0, 0.002]
    (tmp_path / "fixed" / "config.json").write_text(json.dumps(cfg))
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(tmp_path / "fixed"), "--out", str(tmp_path / "s")],
        "strictly decreasing", keep=[tmp_path / "fixed"])
    h = make_gmm()
    with pytest.raises(InputError, match="strictly decreasing"):
        indis.sample(h.denoiser, torch.randn(4, 3), [80.0, 1.0, 5.0, 0.002])


# 16-17: NaN / Inf from the model
def test_nan_inf_from_model(world, tmp_path, capsys):
    bad(capsys, ["teacher", "--model", "python:fake_models:make_nan", "--out", str(world / "teacher"), *TEACHER],
        "NaN", "check the model", keep=[world / "teacher"])
    bad(capsys, ["sample", "--model", "python:fake_models:make_nan_late", "--method", "edm", "--steps", "5",
                 "--out", str(tmp_path / "s")], "NaN or Inf", "check the model")
    assert not (tmp_path / "s" / "samples.safetensors").exists()


# 18-20: an empty prompt list (a condition table with zero rows: the CLI path and the FLUX-style dict of the API)
def test_empty_prompt_list(tmp_path, capsys):
    bad(capsys, ["teacher", "--model", "python:fake_models:make_empty_prompts", "--out", str(tmp_path / "t"), *TEACHER],
        "empty", "at least one prompt")
    h = make_gmm()
    for table in ({"prompt_embeds": torch.zeros(0, 5, 4), "pooled_prompt_embeds": torch.zeros(0, 4)}, {}):
        with pytest.raises(InputError, match="empty"):
            indis.generate_teacher(h.denoiser, tmp_path / "api", (3,), 8, steps=4, cond=CondSpec("table"),
                                   cond_table=table, progress=False)
    assert not (tmp_path / "api" / "manifest.json").exists()


# 21-22: a missing optional dependency (diffusers hidden from a subprocess)
def test_missing_optional_dependency(tmp_path):
    hide = tmp_path / "hide" / "diffusers"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'diffusers'\", name='diffusers')\n")
    env = cli_env()
    env["PYTHONPATH"] = str(tmp_path / "hide") + os.pathsep + env["PYTHONPATH"]
    r = run_indis("sample", "--model", "python:fake_models:make_needs_diffusers", "--method", "edm", "--steps", "3",
                  "--out", str(tmp_path / "s"), env=env, check=False)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "diffusers" in lines[0] and "pip install 'indis[diffusers]'" in lines[0]
    assert not (tmp_path / "s").exists()
    if importlib.util.find_spec("indis.integrations.diffusers") is not None:
        pipe = tmp_path / "pipe"
        pipe.mkdir()
        (pipe / "model_index.json").write_text('{"_class_name": "DDPMPipeline"}')
        r = run_indis("sample", "--model", f"diffusers:{pipe}", "--method", "edm", "--steps", "3",
                      "--out", str(tmp_path / "s"), env=env, check=False)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "pip install 'indis[diffusers]'" in lines[0]


# 23-25: out-of-range NFE
def test_out_of_range_steps(world, tmp_path, capsys):
    bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "0", "--out", str(tmp_path / "s")], "--steps", "between 1 and 1000")
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(tmp_path / "o"), "--method", "god",
                 "--steps", "100000", "--no-progress"], "--steps", "between 1 and 1000", keep=[world / "teacher"])
    bad(capsys, ["teacher", "--model", GMM, "--out", str(tmp_path / "t"), "--steps", "0"], "between 1 and 1000")
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()


# 26-29: an unwritable output folder (a path under a regular file; a file in place of the folder; chmod if not root)
def test_unwritable_output(world, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    bad(capsys, ["teacher", "--model", GMM, "--out", str(f / "sub"), *TEACHER], "cannot create output folder", "writable path")
    bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--out", str(f)], "a_file", "writable path")
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(f / "x"), *TRAIN],
        "writable path", keep=[world / "teacher"])
    assert f.read_text() == "keep me"
    if os.geteuid() != 0:  # root ignores permission bits; the cases above cover it there
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--out", str(ro)], "not writable")
        finally:
            ro.chmod(0o700)


# 30: a pickle is never loaded without --trust-pickle
@pytest.mark.skipif(importlib.util.find_spec("indis.integrations.edm") is None,
                    reason="indis.integrations.edm (edm:PATH.pkl) is not in this tree yet")
def test_pickle_needs_trust_pickle(tmp_path, capsys):
    import pickle

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(pickle.dumps(Evil()))
    bad(capsys, ["sample", "--model", f"edm:{pkl}", "--method", "edm", "--steps", "3", "--out", str(tmp_path / "s")],
        "--trust-pickle", keep=[tmp_path])
    assert not marker.exists()


# (1 again) a bad input (a garbage shard) from a real process: exit code 2 and one line
def test_real_process_one_line_and_debug_traceback(world, tmp_path):
    t = _copy(world / "teacher", tmp_path / "teacher")
    (t / "shard-00000.safetensors").write_bytes(b"\x00garbage")
    args = ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o"), *TRAIN]
    r = run_indis(*args, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][0].startswith("indis: error: shard '")
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1



# (the same input again) with --debug the traceback is shown, and the exit code stays 2
def test_debug_shows_traceback(world, tmp_path, capsys):
    t = _copy(world / "teacher", tmp_path / "teacher")
    (t / "shard-00000.safetensors").write_bytes(b"\x00garbage")
    rc, out, err = _run(["--debug", "train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o"), *TRAIN], capsys)
    assert rc == 2 and "Traceback" in err and "indis: error: shard" in err
