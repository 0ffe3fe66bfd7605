"""Teacher sets shared between experiments that differ only in their model's name (the scaling study's cells of one
mixture at NFE 3 and 5): copied, checked on first use, dropped and made afresh when the model is not the same."""
from __future__ import annotations

import json

import torch

import indis.teacher as teacher_mod
from indis.bench import scaling as sc
from indis.experiment import ADOPTED, SPLITS

S = {**sc.QUICK, "nfes": (3, 5), "multi_seeds": (0, 1), "train": 40, "val": 12, "test": 16}


def _cell(**kw):
    return {"model": "random", "d": 2, "K": 2, "condition": "class", "guidance": 4.0, "nfe": 3, "seed": 0, **kw}


def _exp(root, c):
    return sc._experiment(root / sc.cell_name(c), sc.handle_for(c), c, S, False)


def _made(monkeypatch):
    """Spy on shard generation: the shard indices each teacher call had to make."""
    made, real = [], teacher_mod._make_shards

    def spy(den, ts, todo, *a, **kw):
        made.append(list(todo))
        return real(den, ts, todo, *a, **kw)

    monkeypatch.setattr(teacher_mod, "_make_shards", spy)
    return made


def test_a_sibling_cell_adopts_the_teachers_without_making_them(tmp_path, monkeypatch):
    c3, c5 = _cell(), _cell(nfe=5)
    a = _exp(tmp_path, c3)
    src = {sp: a.teacher(sp).batch(torch.arange(S[sp]), torch.float64, "cpu") for sp in SPLITS}
    b = _exp(tmp_path, c5)
    assert b.adopt_teachers(a.root, sc._exp_config(c3, S)) == list(SPLITS)
    made = _made(monkeypatch)
    for sp in SPLITS:
        got = b.teacher(sp).batch(torch.arange(S[sp]), torch.float64, "cpu")
        # the same files copied: equal bit for bit (no computation between them)
        assert all(torch.equal(x, y) for x, y in zip(got[1:], src[sp][1:]) if isinstance(x, torch.Tensor))
        man = json.loads((b.teacher_path(sp) / "manifest.json").read_text())
        assert man["config"]["model"] == sc.handle_spec(c5) and (b.teacher_path(sp) / ADOPTED).is_file()
    assert made == [[], [], []]  # loaded and checked, nothing generated
    assert b.adopt_teachers(a.root, sc._exp_config(c3, S)) == []  # already there: left alone
    other_seed = _exp(tmp_path, _cell(nfe=5, seed=1))  # other priors: nothing to adopt
    assert other_seed.adopt_teachers(a.root, sc._exp_config(c3, S)) == []


def test_an_adopted_set_of_another_model_is_made_afresh(tmp_path, monkeypatch):
    c3 = _cell()
    a = _exp(tmp_path, c3)
    xa = a.teacher("val").batch(torch.arange(S["val"]), torch.float64, "cpu")[-1]
    wrong = _cell(guidance=1.0, nfe=5)  # same settings but another model: the copy fails the checks of its first use
    w = _exp(tmp_path, wrong)
    assert w.adopt_teachers(a.root, sc._exp_config(c3, S)) == ["val"]  # the one split made
    made = _made(monkeypatch)
    xw = w.teacher("val").batch(torch.arange(S["val"]), torch.float64, "cpu")[-1]
    assert made == [[0]] and not (w.teacher_path("val") / ADOPTED).exists()
    fresh = _exp(tmp_path / "fresh", wrong).teacher("val").batch(torch.arange(S["val"]), torch.float64, "cpu")[-1]
    # the regenerated set is this model's: DOP853 at rtol 1e-7 on identical inputs, so any difference is round-off
    assert torch.allclose(xw, fresh, rtol=1e-9, atol=1e-9) and not torch.allclose(xw, xa, atol=1e-3)


def test_run_cell_takes_what_its_siblings_made(tmp_path):
    c3, c5, c5s1 = _cell(), _cell(nfe=5), _cell(nfe=5, seed=1)
    a = _exp(tmp_path, c3)
    for sp in SPLITS:
        a.teacher(sp)
    (a.root / "teacher_accuracy.json").write_text(json.dumps(sc.teacher_accuracy(a.h, probe=4)))
    info, adopted = sc._adopt(_exp(tmp_path, c5), tmp_path, c5, S)
    assert info == json.loads((a.root / "teacher_accuracy.json").read_text()) and adopted == {
        "teacher_accuracy": sc.cell_name(c3), "teachers": [f"{sc.cell_name(c3)}/{sp}" for sp in SPLITS]}
    info, adopted = sc._adopt(_exp(tmp_path, c5s1), tmp_path, c5s1, S)  # another seed: the model's accuracy only
    assert info is not None and adopted["teachers"] == []
