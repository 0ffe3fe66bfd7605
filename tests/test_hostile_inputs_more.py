"""Hostile and wrong input, third round (numbered 77-105; 1-76 are in test_hostile_inputs.py): no command overwrites
another artifact, every bad number is refused with its flag and range, user errors are named. Each CLI case gives ONE
line `indis: error: ...`, exit code 2, no traceback, and leaves every file already written byte-for-byte intact."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fake_models import cli_env, run_indis  # noqa: E402
from hostile_helpers import GMM, TEACHER, _copy, _run, api_bad, bad, build_world  # noqa: E402

import indis  # noqa: E402
from indis.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good teacher set and a trained GOD discretization (N=3) to damage copies of."""
    return build_world(tmp_path_factory.mktemp("hostile"))


# ================================================================================================================
# Third round: numbered 77.. ; no command overwrites another artifact, every bad number refused, user errors named.
# ================================================================================================================
THIRD_ROUND = 28  # distinct bad inputs below (77-104), plus the sweep of every numeric option (105)


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    """Copies of the teacher set and the trained run to point `indis export` at."""
    root = tmp_path_factory.mktemp("export")
    return _copy(world / "teacher", root / "teacher"), _copy(world / "god", root / "god")


# 77-82: export never writes into another artifact's folder, never over a file it did not write (without --overwrite)
def test_export_never_destroys_another_artifact(exported, tmp_path, capsys):
    teacher, god = exported
    src = god / "best"
    exp = ["export", "--discretization", str(src), "--format", "sigmas-json"]
    for target in (teacher / "manifest.json", src / "config.json", god / "history.json"):  # 77-79
        for extra in ([], ["--overwrite"]):
            bad(capsys, [*exp, "--out", str(target), *extra], str(target.parent), "another artifact", keep=[teacher, god])
    bad(capsys, ["export", "--discretization", str(src), "--format", "diffusers", "--out", str(teacher)],  # 80
        "teacher set", keep=[teacher, god])
    assert not (teacher / "scheduler_config.json").exists()
    mine = tmp_path / "notes.json"  # 81: a file export did not write is kept unless --overwrite
    mine.write_text('{"my": "notes"}')
    bad(capsys, [*exp, "--out", str(mine)], str(mine), "--overwrite", keep=[tmp_path])
    assert main([*exp, "--out", str(mine), "--overwrite"]) == 0 and json.loads(mine.read_text())["format"] == "indis-sigmas"
    assert main([*exp, "--out", str(mine)]) == 0  # its own earlier export is replaced without asking
    capsys.readouterr()
    pipe = tmp_path / "pipe"  # 82: a diffusers pipeline's root folder
    pipe.mkdir()
    (pipe / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    bad(capsys, ["export", "--discretization", str(src), "--format", "diffusers", "--out", str(pipe)], "pipeline folder",
        keep=[pipe, god])
    capsys.readouterr()


# 83: a teacher set of zoo:digits is refused for zoo:digits-cond (one network serves both; the spec and condition differ)
def test_train_refuses_a_teacher_of_the_unconditional_twin(tmp_path, capsys):
    t = tmp_path / "t"
    assert main(["teacher", "--model", "zoo:digits", "--out", str(t), "--num", "8", "--steps", "4", "--no-progress"]) == 0
    bad(capsys, ["train", "--model", "zoo:digits-cond", "--teacher", str(t), "--method", "god", "--steps", "3",
                 "--out", str(tmp_path / "o"), "--no-progress"], "zoo:digits", "class labels", keep=[t])
    assert not (tmp_path / "o").exists()


# 84-88: integer options out of range, named with their range (bench solvers, eval)
@pytest.mark.parametrize("argv,flag", [(["bench", "solvers", "--batch", "0"], "--batch"),
                                       (["bench", "solvers", "--batch", "-1"], "--batch"),
                                       (["bench", "solvers", "--size", "0"], "--size"),
                                       (["eval", "--model", GMM, "--teacher", "t", "--method", "edm", "--steps", "3",
                                         "--batch-size", "0"], "--batch-size"),
                                       (["eval", "--model", GMM, "--teacher", "t", "--method", "edm", "--steps", "3",
                                         "--batch-size", "-4"], "--batch-size")])
def test_integer_options_out_of_range(capsys, argv, flag):
    bad(capsys, argv, flag, "between")


# 89-95: a hand-edited config.json or weights file: every field checked, the file and field named
@pytest.mark.parametrize("edit,needle", [(lambda c: c.update(data_shape="3"), "data_shape"),
                                         (lambda c: c.pop("kwargs"), "kwargs"),
                                         (lambda c: c.update(method="teleport"), "method"),
                                         (lambda c: c["kwargs"]["init_times"].__setitem__(1, float("nan")), "init_times"),
                                         (lambda c: c["kwargs"].update(init_times=sorted(c["kwargs"]["init_times"])), "init_times"),
                                         (lambda c: c.update(t_min=0.9), "t_min"),
                                         (lambda c: c.update(format_version="abc"), "format_version")])
def test_hand_edited_config_is_refused_with_the_field_named(world, tmp_path, capsys, edit, needle):
    d = _copy(world / "god" / "best", tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    msg = api_bad(lambda: indis.from_pretrained(d), "config.json", needle)
    assert "upgrade" not in msg or needle != "format_version"
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(d), "--out", str(tmp_path / "s")], needle, keep=[d])


# 96: NaN in the saved weights: the file and the tensor named
def test_nan_weights_name_the_file(world, tmp_path):
    from indis.io import load_tensors, save_tensors

    d = _copy(world / "god" / "best", tmp_path / "d")
    w, meta = load_tensors(d / "model.safetensors")
    key = next(k for k, v in w.items() if v.is_floating_point())
    w[key] = torch.full_like(w[key], float("nan"))
    save_tensors(d / "model.safetensors", w, meta)
    api_bad(lambda: indis.from_pretrained(d), "model.safetensors", key, "NaN")


# 97-100: a failing python: factory names its spec; a pickle dict without a network says what it holds; a teacher set
# or a training run given as --discretization says what the folder is
def test_user_errors_are_named(world, tmp_path, capsys):
    bad(capsys, ["sample", "--model", "python:fake_models:make_raising", "--method", "edm", "--steps", "3",
                 "--out", str(tmp_path / "s")], "python:fake_models:make_raising", "boom")
    if importlib.util.find_spec("indis.integrations.edm") is not None:
        import pickle

        pkl = tmp_path / "snap.pkl"
        pkl.write_bytes(pickle.dumps({"ema": None, "step": 3}))
        bad(capsys, ["sample", "--model", f"edm:{pkl}", "--trust-pickle", "--method", "edm", "--steps", "3",
                     "--out", str(tmp_path / "s")], "'ema' is a NoneType", "torch module")
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(world / "teacher"), "--out", str(tmp_path / "s")],
        "teacher set", "not a saved discretization", keep=[world / "teacher"])
    bad(capsys, ["sample", "--model", GMM, "--discretization", str(world / "god"), "--out", str(tmp_path / "s")],
        "training run", str(world / "god" / "best"), keep=[world / "god"])


# 101: a full disk names the file and says that a rerun resumes; the existing file is unchanged
def test_disk_full_names_the_file(world, tmp_path, capsys, monkeypatch):
    import errno

    import indis.io as io

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    bad(capsys, ["schedule", "--model", GMM, "--method", "edm", "--steps", "3", "--out", str(tmp_path / "e")],
        "no space left", "resumes", str(tmp_path / "e"))
    assert not list((tmp_path / "e").glob(".*.tmp"))  # no temp file left behind


# 102-103: diffusers entry points: a discretization folder given to IndisScheduler.from_pretrained; an export without a
# pipeline config for a model diffusers' flow schedulers cannot take (no blame on a config the user never gave)
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers is not installed")
def test_diffusers_entry_points_say_what_to_do(world, tmp_path, capsys):
    from indis.discretizations.base import GlobalSchedule
    from indis.integrations.diffusers import IndisScheduler

    api_bad(lambda: IndisScheduler.from_pretrained(str(world / "god" / "best")), "from_discretization")
    d = GlobalSchedule(3, indis.FlowMatching(), "euler", data_shape=(3,))
    d.extra["model_info"] = {"prediction": "x0", "spec": "python:my_flow:make"}
    d.save(tmp_path / "flow")
    msg = bad(capsys, ["export", "--discretization", str(tmp_path / "flow"), "--format", "diffusers",
                       "--out", str(tmp_path / "x")], "'x0'", "--pipeline-config")
    assert "says prediction_type" not in msg


# 104: WORLD_SIZE set by hand with one process: it says what it waits for and gives up after --dist-timeout
def test_lonely_rank_gives_up_after_dist_timeout(tmp_path):
    import time

    from fake_models import free_port

    env = cli_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    t0 = time.time()
    r = run_indis("teacher", "--model", GMM, "--out", str(tmp_path / "t"), *TEACHER, "--dist-timeout", "2", env=env,
                  check=False)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and time.time() - t0 < 90, r.stderr
    assert "waiting for all 2 processes" in lines[0] and lines[-1].startswith("indis: error:"), r.stderr
    assert "--dist-timeout" in lines[-1] and "Traceback" not in r.stderr
    assert not (tmp_path / "t" / "manifest.json").exists()


# 105: every int/float option of every command, fed 0, -1, nan and a huge value,
# is accepted exactly when it lies in its declared range and otherwise refused with the flag and range named
def _leaf_parsers():
    import argparse

    from indis.cli import build_parser

    out = []

    def walk(p, path):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((path, p))
        for a in subs:
            for name, sp in a.choices.items():
                walk(sp, path + [name])
    walk(build_parser(), [])
    return out


def _required_argv(parser, skip):
    import argparse

    argv, done = [], set()
    for g in parser._mutually_exclusive_groups:
        if g.required:
            a = next(a for a in g._group_actions if a is not skip) if skip in g._group_actions else g._group_actions[0]
            done.update(id(x) for x in g._group_actions)
            if a is not skip:
                argv += [a.option_strings[-1], "1" if a.type in (int, float) else "x"]
    for a in parser._actions:
        if id(a) in done or a is skip or isinstance(a, argparse._HelpAction):
            continue
        if not a.option_strings and a.nargs != 0:  # positional
            argv.append(a.choices and next(iter(a.choices)) or "x")
        elif a.required:
            val = next(iter(a.choices)) if a.choices else ("1" if a.type in (int, float) else "x")
            argv += [a.option_strings[-1], str(val)]
    return argv


def test_every_numeric_option_is_range_checked(capsys):
    import math

    from indis.commands.common import check_numbers, number_range, numeric_options
    from indis.cli import build_parser

    checked = 0
    for path, parser in _leaf_parsers():
        assert main([*path, "--help"]) == 0 if path else True
        helptext = capsys.readouterr().out
        for a in numeric_options(parser):
            flag = a.option_strings[-1]
            assert flag in helptext or a.help == __import__("argparse").SUPPRESS, (path, flag)  # hidden test sizes too
            rng = number_range(" ".join(path), a.dest)
            assert rng is not None, f"{' '.join(path)} {flag} has no declared range (indis.commands.common.NUMBER_RANGES)"
            lo, hi, lo_open, hi_open = rng
            for raw in ("0", "-1", "nan", "1" + "0" * 30 if a.type is int else "1e300"):
                v = float(raw)
                ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
                argv = [*path, *_required_argv(parser, a), flag, raw]
                if ok:
                    p = build_parser()
                    check_numbers(p, p.parse_args(argv))  # accepted (the command itself is not run)
                else:
                    rc, out, err = _run(argv, capsys)
                    lines = [ln for ln in err.splitlines() if ln.strip()]
                    assert rc == 2 and len(lines) == 1 and lines[0].startswith("indis: error:"), (argv, err)
                    assert flag in lines[0] and "Traceback" not in err, (argv, lines[0])
                checked += 1
    assert checked >= 4 * 70  # every numeric option of every command, four values each
