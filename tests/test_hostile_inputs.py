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
--trust-pickle. Plus: a real process gives exit 2 with one line, and --debug shows the traceback. A second round
(31-76) follows below; the third (77-105) is in test_hostile_inputs_more.py, the shared helpers in hostile_helpers.py."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import cli_env, make_gmm, run_indis  # noqa: E402
from hostile_helpers import GMM, TEACHER, TRAIN, _copy, _run, api_bad, bad, build_world  # noqa: E402

import indis  # noqa: E402
from indis.cli import main  # noqa: E402
from indis.errors import InputError  # noqa: E402
from indis.priors import CondSpec  # noqa: E402

BAD_INPUTS = 30  # distinct bad inputs exercised below (see the numbered comments)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good teacher set and a trained GOD discretization (N=3) to damage copies of."""
    return build_world(tmp_path_factory.mktemp("hostile"))


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


# ================================================================================================================
# Second round (newcomer path and hostile inputs): numbered 31.. ; each case exits 2 with the culprit named, or raises
# InputError/ModelOutputError from the API, and leaves nothing that blocks a valid rerun.
# ================================================================================================================
SECOND_ROUND = 46  # distinct bad inputs below (31-76), counted in the closing note


# 31-32: a seed outside the generator's range fails before anything is written; a valid rerun then works
def test_seed_out_of_range_writes_nothing(tmp_path, capsys):
    out = tmp_path / "t"
    bad(capsys, ["teacher", "--model", GMM, "--out", str(out), *TEACHER, "--seed", str(2**64)], "seed", "2^63")
    assert not (out / "manifest.json").exists()
    assert main(["teacher", "--model", GMM, "--out", str(out), *TEACHER]) == 0
    bad(capsys, ["train", "--model", GMM, "--teacher", str(out), "--out", str(tmp_path / "g"), *TRAIN, "--seed", str(2**64)], "seed")


# 33-37: silent acceptance: a schedule trained for another model, --label without classes, float labels, a hand-edited
# t_min, GITS with coeff nan
def test_no_silent_acceptance(world, tmp_path, capsys):
    d = world / "god" / "best"
    bad(capsys, ["sample", "--model", "python:fake_models:make_other", "--discretization", str(d), "--out", str(tmp_path / "s")],
        "trained for python:fake_models:make_gmm", "--force")
    assert main(["sample", "--model", "python:fake_models:make_other", "--discretization", str(d), "--out", str(tmp_path / "s"),
                 "--force"]) == 0
    capsys.readouterr()
    bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--label", "1", "--out", str(tmp_path / "s2")],
        "--label", "class-conditional")
    fn = indis.load_model("zoo:digits-cond").denoiser.model
    api_bad(lambda: fn(torch.zeros(2, 1, 8, 8), torch.ones(2), torch.tensor([1.0, 2.0])), "integers")
    e = _copy(d, tmp_path / "edited")
    cfg = json.loads((e / "config.json").read_text())
    cfg["t_min"] = -5.0
    (e / "config.json").write_text(json.dumps(cfg))
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(e), "--out", str(tmp_path / "s3")], "t_min")
    bad(capsys, ["schedule", "--model", GMM, "--method", "gits", "--steps", "3", "--coeff", "nan"], "coeff")


# 38-43: misleading messages: NaN bounds, NaN in a teacher shard, a missing --init folder, an empty NFE range,
# another model's teacher set, --rho inf
def test_messages_name_the_real_cause(world, tmp_path, capsys):
    base = ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(tmp_path / "o"), *TRAIN]
    bad(capsys, [*base, "--shift-bound", "nan"], "--shift-bound", "finite")
    bad(capsys, [*base, "--scale-bound", "inf"], "--scale-bound", "finite")
    bad(capsys, [*base, "--ema", "1"], "--ema", "[0, 1)")
    bad(capsys, [*base, "--loss", "digits-perceptual"], "digits-perceptual", "[1, 8, 8]")
    t = _copy(world / "teacher", tmp_path / "teacher")
    from indis.io import load_tensors, save_tensors

    tensors, meta = load_tensors(t / "shard-00001.safetensors")
    tensors["x0"][0, 0] = float("nan")
    save_tensors(t / "shard-00001.safetensors", tensors, meta)
    bad(capsys, ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o2"), *TRAIN], "shard-00001", "NaN")
    bad(capsys, [*base, "--init", "/nonexistent/run"], "/nonexistent/run", "no such folder")
    bad(capsys, ["demo", "--nfe", "5-2", "--out", str(tmp_path / "d")], "5-2", "empty")
    other = tmp_path / "other"
    assert main(["teacher", "--model", "python:fake_models:make_image", "--out", str(other), *TEACHER]) == 0
    capsys.readouterr()
    bad(capsys, ["train", "--model", GMM, "--teacher", str(other), "--out", str(tmp_path / "o3"), *TRAIN], str(other))
    bad(capsys, ["schedule", "--model", GMM, "--method", "edm", "--steps", "3", "--rho", "inf"], "rho")


# 44-53: raw library errors: coeff < 0, lr nan / -1, devices, malformed config/manifest fields, wrong weights, env vars
def test_no_raw_library_errors(world, tmp_path, capsys, monkeypatch):
    bad(capsys, ["schedule", "--model", GMM, "--method", "gits", "--steps", "3", "--coeff", "-1"], "coeff")
    base = ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(tmp_path / "o"), *TRAIN]
    bad(capsys, [*base, "--lr", "nan"], "--lr")
    bad(capsys, [*base, "--lr", "-1"], "--lr")
    bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--device", "foo", "--out", str(tmp_path / "s")], "--device", "foo")
    if not torch.cuda.is_available():
        bad(capsys, ["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--device", "cuda", "--out", str(tmp_path / "s")], "CUDA")
    for bench in (["digits", "--quick"], ["scaling", "--quick"]):  # refused before any teacher or cell is computed
        bad(capsys, ["bench", *bench, "--device", "foo", "--out", str(tmp_path / "b")], "--device", "foo")
    d = _copy(world / "god" / "best", tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    for field, value in (("steps", "three"), ("kwargs", [1])):
        (d / "config.json").write_text(json.dumps({**cfg, field: value}))
        bad(capsys, ["sample", "--model", GMM, "--discretization", str(d), "--out", str(tmp_path / "s")], "config.json", field)
    (d / "config.json").write_text(json.dumps(cfg))
    from indis.io import load_tensors, save_tensors

    w, meta = load_tensors(d / "model.safetensors")
    w["logits"] = torch.zeros(7, dtype=torch.float64)
    save_tensors(d / "model.safetensors", w, meta)
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(d), "--out", str(tmp_path / "s")], "model.safetensors", "logits")
    t = _copy(world / "teacher", tmp_path / "t")
    man = json.loads((t / "manifest.json").read_text())
    for edit in ({"num_samples": "many"}, {"bogus": 1}):
        (t / "manifest.json").write_text(json.dumps({**man, "config": {**man["config"], **edit}}))
        bad(capsys, ["train", "--model", GMM, "--teacher", str(t), "--out", str(tmp_path / "o2"), *TRAIN], "manifest.json",
            next(iter(edit)))
    monkeypatch.setenv("WORLD_SIZE", "abc")
    bad(capsys, base, "WORLD_SIZE", "integer")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    bad(capsys, base, "RANK", "torchrun")


# 54-57: lost work: a second writer into a busy folder, a training run into a teacher set's folder and the reverse, a
# finished run reused with other settings
def test_output_folders_are_protected(world, tmp_path, capsys):
    from indis.io import FolderLock

    out = tmp_path / "busy"
    with FolderLock(out, "training run"):
        bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(out), *TRAIN], "in use", "pid")
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(world / "teacher"), *TRAIN],
        "teacher set", keep=[world / "teacher"])
    bad(capsys, ["teacher", "--model", GMM, "--out", str(world / "god"), *TEACHER], "training run", keep=[world / "god"])
    g = _copy(world / "god", tmp_path / "g")
    bad(capsys, ["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(g), *TRAIN, "--lr", "0.02"],
        "other settings", "lr", keep=[g])
    rc, out_, err = _run(["train", "--model", GMM, "--teacher", str(world / "teacher"), "--out", str(g), *TRAIN, "--json"], capsys)
    assert rc == 0 and "reused" in err and json.loads(out_)["reused"] is True


# 58-61: resource limits and unbounded work: huge step counts in the API and CLI, absurd teacher sizes
def test_resource_caps(tmp_path, capsys):
    api_bad(lambda: indis.heuristic("edm", 10**9, indis.EDM()), "100000")
    api_bad(lambda: indis.heuristic("logsnr", 10**6, indis.EDM()), "100000")
    t0 = __import__("time").time()
    bad(capsys, ["teacher", "--model", GMM, "--out", str(tmp_path / "t"), "--num", str(10**12), "--shard-size", "1"], "--num-samples", "between 1 and")
    bad(capsys, ["teacher", "--model", GMM, "--out", str(tmp_path / "t"), "--num", str(10**7), "--shard-size", "1"], "shard")
    assert __import__("time").time() - t0 < 60  # refused up front, not after minutes of work


# 62-70: API construction and the first call
def test_api_construction_and_first_call():
    api_bad(lambda: indis.VP(beta_min=-1), "beta_min")
    api_bad(lambda: indis.VP(beta_min=float("nan")), "beta_min", "finite")
    api_bad(lambda: indis.EDM(t_max=float("inf")), "EDM", "t_max")
    api_bad(lambda: indis.FlowMatching(t_min=float("nan")), "t_min")
    api_bad(lambda: indis.Denoiser(lambda x, t, c=None: x, indis.EDM(), "x0", guidance_scale="high"), "guidance_scale")
    x, t = torch.zeros(2, 3), torch.ones(2)
    api_bad(lambda: indis.Denoiser(lambda x, t, c=None: x.numpy(), indis.EDM(), "x0")(x, t), "ndarray", exc=indis.ModelOutputError)
    api_bad(lambda: indis.Denoiser(lambda x, t, c=None: None, indis.EDM(), "x0")(x, t), "NoneType", exc=indis.ModelOutputError)
    api_bad(lambda: indis.Denoiser(lambda x, t, c=None: x, indis.EDM(), "x0")(x, t, torch.zeros(5, 4)), "5 rows", "batch of 2")
    api_bad(lambda: indis.TrainConfig(seed=2**64).check(), "seed")


# 71-73: newcomer path: python: modules from the current folder, byte-reproducible samples, reused runs reported
def test_python_module_from_current_folder_and_reproducible_samples(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("indis")
    examples = Path(__file__).resolve().parent.parent / "examples"
    if not script.is_file():
        pytest.skip("the indis console script is not installed next to this python")
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}
    runs = []
    for k in range(2):
        out = tmp_path / f"s{k}"
        r = subprocess.run([str(script), "sample", "--model", "python:custom_model:make", "--method", "edm", "--steps", "3",
                            "--num", "4", "--out", str(out)], cwd=examples, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        runs.append((out / "samples.safetensors").read_bytes())
    assert runs[0] == runs[1]  # same command twice: identical bytes (sorted metadata, same numbers)


# 74-76: the one-line contract for argparse-level errors (unknown choice, bad type, missing flag)
@pytest.mark.parametrize("argv,needle", [(["sample", "--model", GMM, "--method", "edm", "--steps", "3", "--solver", "rk4", "--out", "x"], "rk4"),
                                          (["train", "--model", GMM, "--teacher", "t", "--method", "god", "--steps", "x", "--out", "o"], "--steps"),
                                          (["teacher", "--model", GMM], "--out")])
def test_argparse_errors_are_one_line(capsys, argv, needle):
    bad(capsys, argv, needle)


