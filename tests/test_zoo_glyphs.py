"""The glyphs data set and its training recipes: deterministic renders, held-out faces never in training, geometry
checks of the renderer against facts of the letters, and a resumed denoiser run equal to an uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from indis.zoo import glyphs as G


def test_generation_is_deterministic_and_seeded():
    a = G.make_glyphs("train", 300, workers=1)
    b = G.make_glyphs("train", 300, workers=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = G.make_glyphs("train", 300, seed=1, workers=1)
    assert not np.array_equal(a[0], c[0])  # another seed, other glyphs
    h = G.make_glyphs("heldout", 300, workers=1)
    assert not np.array_equal(a[0], h[0])  # the held-out split has its own streams
    assert a[0].dtype == np.float32 and a[0].shape == (300, 1, 16, 16) and a[0].min() >= -1 and a[0].max() <= 1


def test_heldout_faces_never_occur_in_training():
    _, _, faces = G.make_glyphs("train", 3000, workers=1)
    assert not set(faces) & set(G.HELDOUT_FACES) and set(faces) == set(G.TRAIN_FACES)  # every training face used
    _, _, hf = G.make_glyphs("heldout", 600, workers=1)
    share = np.mean([f in G.HELDOUT_FACES for f in hf])
    assert 0.4 < share < 0.6  # half of the held-out split; binomial(600, 0.5) stays within +-0.1 w.p. > 1 - 1e-6
    assert len(G.FACES) == 21 and len(G.CHARS) == 62


def test_renders_keep_the_shapes_of_the_letters():
    """Independent facts: H is mirror-symmetric, O has an open hole, lower-case x is shorter than upper-case X, and
    the plain render puts no ink in the corners."""
    h = G.render("DejaVuSans.ttf", "H")
    assert np.abs(h - h[:, ::-1]).mean() < 0.05  # symmetric up to the half-pixel grid offset
    o = G.render("DejaVuSans.ttf", "O")
    assert o[7:9, 7:9].max() < -0.5 and o.max() > 0.9  # background inside the ring, ink on it
    ink_rows = lambda img: np.where((img > 0).any(1))[0]  # noqa: E731
    assert len(ink_rows(G.render("DejaVuSerif.ttf", "x"))) < len(ink_rows(G.render("DejaVuSerif.ttf", "X")))
    for face in G.FACES:
        img = G.render(face, "M")
        assert img[0, 0] == img[0, -1] == img[-1, 0] == img[-1, -1] == -1.0, face


def test_parallel_generation_equals_serial():
    a = G.make_glyphs("train", 4000, workers=1)
    b = G.make_glyphs("train", 4000, workers=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_resumed_denoiser_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    from indis.zoo import train_glyphs as T

    kw = dict(steps=6, ckpt_every=3, progress=False, num_train=64, batch_size=8)
    full = T.train_glyphs(tmp_path / "full", **kw)
    calls = {"n": 0}
    real = T.edm_loss

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C during step 5, after the checkpoint at step 3
        return real(*a, **k)

    monkeypatch.setattr(T, "edm_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        T.train_glyphs(tmp_path / "cut", **kw)
    monkeypatch.setattr(T, "edm_loss", real)
    again = T.train_glyphs(tmp_path / "cut", **kw)
    assert again["steps"] == full["steps"] == 6
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "full" / "glyphs-cond.safetensors")), load_file(str(tmp_path / "cut" / "glyphs-cond.safetensors"))
    # same code, inputs and thread count in one process: the resumed run retraces steps 4-6 exactly
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_shipped_glyph_classifier_reads_plain_glyphs():
    """The shipped weights are the ones its card names (SHA-256), and they read the plain (unaugmented) renders of
    every character: faces it trained on and a held-out face, beyond the ambiguous pairs (0/O, l/I/1)."""
    import json

    from indis.zoo import WEIGHTS_DIR, load_classifier
    from indis.zoo.train import sha256_file

    meta = json.loads((WEIGHTS_DIR / "glyphs-classifier.json").read_text())
    assert sha256_file(WEIGHTS_DIR / meta["weights"]) == meta["sha256"]
    clf = load_classifier(name="glyphs")
    ambiguous = set("0OIl1oOsSxXcCvVwWzZuUpP")  # pairs that differ mainly by size in some faces
    for face in ("DejaVuSans.ttf", "STIXGeneral.ttf", G.HELDOUT_FACES[0]):
        x = torch.from_numpy(np.stack([G.render(face, c) for c in G.CHARS]))[:, None]
        with torch.no_grad():
            pred = clf(x).argmax(1)
        clear = [i for i, c in enumerate(G.CHARS) if c not in ambiguous]
        acc = float((pred[clear] == torch.tensor(clear)).float().mean())
        assert acc >= 0.9, (face, acc)  # measured: 1.0 on all three (all 62 characters: 0.97, 1.0, 1.0)


def test_glyphs_model_contract():
    from indis.errors import InputError
    from indis.zoo import load_zoo

    m = load_zoo("zoo:glyphs")
    assert m.schedule_name == "edm" and m.prediction == "x0" and m.shape == (1, 16, 16) and m.num_classes == 62
    assert {"recipe", "seed", "training_time_s", "sha256", "faces_train", "faces_heldout", "chars"} <= set(m.meta)
    assert m.meta["complete"] and m.meta["steps"] == m.meta["recipe"]["steps"]
    assert not set(m.meta["faces_heldout"]) & set(m.meta["faces_train"])
    assert not m.fn.training and not any(p.requires_grad for p in m.fn.parameters())
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([0.002, 0.5, 5.0, 80.0])
    out = m.fn(x, t, torch.tensor([0, 10, 61, 62]))  # 62: the null class of classifier-free guidance
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(m.fn(x, t, torch.full((4,), 62)), m.fn(x, t, torch.full((4,), 10)))  # the label matters
    with pytest.raises(InputError, match="cond"):
        m.fn(x, t, torch.tensor([0, 1, 2, 63]))


def test_glyph_samples_have_the_requested_character():
    """One sample of each of the 62 characters by an EDM Heun sampler written in the tests (not indis' solvers):
    the shipped glyph classifier reads most of them as the requested character."""
    import os
    import sys

    from indis.zoo import load_classifier, load_zoo

    sys.path.insert(0, os.path.dirname(__file__))
    from edm_reference import heun_sample

    m = load_zoo("zoo:glyphs")
    labels = torch.arange(62)
    x = heun_sample(m.fn, 80 * torch.randn(62, 1, 16, 16, generator=torch.Generator().manual_seed(7)), labels, 20)
    assert x.abs().max() < 1.5
    with torch.no_grad():
        acc = float((load_classifier(name="glyphs")(x.clamp(-1, 1)).argmax(1) == labels).float().mean())
    assert acc >= GLYPH_ACC_THRESHOLD, acc
# measured at ship time with this 20-step sampler: 0.92-0.98 over prior seeds 0-9 (mean 0.96; seed 7: 0.95); the
# sampler is deterministic, so only float rounding on another machine can flip a borderline sample or two
GLYPH_ACC_THRESHOLD = 0.85
