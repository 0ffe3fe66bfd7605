"""Helpers of the hostile-input tests (test_hostile_inputs*.py): run the CLI in-process, check the one-line error
contract with every file already written left intact, and build the teacher set and trained run they damage copies of."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from indis.cli import main
from indis.errors import InputError

GMM = "python:fake_models:make_gmm"
TEACHER = ["--num-samples", "24", "--steps", "8", "--shard-size", "8", "--batch-size", "8", "--no-progress"]
TRAIN = ["--method", "god", "--steps", "3", "--iterations", "6", "--batch-size", "8", "--val-every", "3", "--starts", "1",
         "--ckpt-every", "3", "--no-progress"]


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


def build_world(root):
    """A good teacher set and a trained GOD discretization (N=3) under `root`, to damage copies of."""
    with torch.random.fork_rng():
        assert main(["teacher", "--model", GMM, "--out", str(root / "teacher"), *TEACHER]) == 0
        assert main(["train", "--model", GMM, "--teacher", str(root / "teacher"), "--out", str(root / "god"), *TRAIN]) == 0
    return root


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def api_bad(fn, *needles, exc=InputError):
    with pytest.raises(exc) as e:
        fn()
    for n in needles:
        assert n.lower() in str(e.value).lower(), (n, str(e.value))
    return str(e.value)
