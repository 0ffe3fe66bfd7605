"""Training recipes of the glyphs models (`indis zoo train glyphs`, `indis zoo train glyphs-classifier`).

The denoiser run is resumable: a checkpoint (weights, moving average, Adam moments, step, random stream, history) is
written atomically to `glyphs-train-state.safetensors` every `ckpt_every` steps and on Ctrl-C, and a rerun with the
same settings continues from it; the finished weights are the moving average, saved as `glyphs-cond.safetensors`
with a JSON card (recipe, data recipe, seed, time, losses, SHA-256)."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io import atomic_write_json, load_tensors, save_tensors
from . import glyphs as G
from .nets import EDMPrecond, GlyphsClassifier, TinyUNet
from .train import _lr, edm_loss, sha256_file, write_reference

GLYPHS_RECIPE: dict[str, Any] = {
    "arch": {"in_ch": 1, "ch": [40, 80], "emb_dim": 128, "num_classes": 62},
    "sigma_data": 0.6,  # replaced by the measured std of the training glyphs
    "data": f"indis.zoo.glyphs train split: {G.SPLITS['train'][1]} glyphs, {len(G.TRAIN_FACES)} faces, seed 0",
    "batch_size": 128, "steps": 12000, "lr": 2e-3, "lr_warmup": 500, "lr_final_frac": 0.05, "ema_decay": 0.999,
    "P_mean": -1.2, "P_std": 1.2, "label_dropout": 0.1, "null_label": 62,
}
GLYPHS_CLASSIFIER_RECIPE: dict[str, Any] = {
    "data": "indis.zoo.glyphs train split (augmented renders), held-out split for accuracy", "batch_size": 128,
    "steps": 6000, "lr": 2e-3, "weight_decay": 1e-4, "noise_std": 0.1,
}
STATE = "glyphs-train-state.safetensors"


def build_glyphs_denoiser(recipe: dict[str, Any]) -> EDMPrecond:
    a = recipe["arch"]
    return EDMPrecond(TinyUNet(in_ch=a["in_ch"], ch=tuple(a["ch"]), emb_dim=a["emb_dim"], num_classes=a["num_classes"]),
                      recipe["sigma_data"])


def _save_state(path: Path, model: EDMPrecond, ema: EDMPrecond, opt: torch.optim.Optimizer, step: int,
                g: torch.Generator, meta: dict[str, Any]) -> None:
    t = {f"model.{k}": v for k, v in model.net.state_dict().items()}
    t.update({f"ema.{k}": v for k, v in ema.net.state_dict().items()})
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in st:
                t[f"opt.{i}.{name}"] = st[name]
        if "step" in st:
            t[f"opt.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    t["rng"] = g.get_state()
    save_tensors(path, t, {"meta": json.dumps({**meta, "step": step})})


def _load_state(path: Path, model: EDMPrecond, ema: EDMPrecond, opt: torch.optim.Optimizer, g: torch.Generator,
                recipe: dict[str, Any], seed: int) -> tuple[int, list[dict[str, Any]]]:
    t, meta = load_tensors(path)
    m = json.loads(meta["meta"])
    if m["recipe"] != recipe or m["seed"] != seed:
        raise InputError(f"'{path}' continues a run with another recipe or seed; use another --out or delete it")
    model.net.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    ema.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"opt.{i}.exp_avg"], "exp_avg_sq": t[f"opt.{i}.exp_avg_sq"],
                            "step": torch.tensor(float(t[f"opt.{i}.step"][0]))}
    g.set_state(t["rng"])
    return int(m["step"]), list(m.get("history", []))


def train_glyphs(out_dir: str | Path, seed: int = 0, steps: int | None = None, minutes: float | None = None,
                 ckpt_every: int = 250, progress: bool = True, **over: Any) -> dict[str, Any]:
    """Train the class-conditional glyphs EDM denoiser (label dropout to the null class 62), resumably from the last
    checkpoint. `over` replaces recipe entries (e.g. num_train, batch_size for tests); they are recorded."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = copy.deepcopy(GLYPHS_RECIPE)
    unknown = set(over) - set(r) - {"num_train"}
    if unknown:
        raise InputError(f"unknown glyphs recipe entries {sorted(unknown)}")
    r.update(over)
    if steps is not None:
        r["steps"] = int(steps)
    x_all, y_all = G.load_glyphs_tensor("train", n=r.get("num_train"), seed=0)
    r["sigma_data"] = round(float(x_all.std()), 4)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_glyphs_denoiser(r)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
    start, history = 0, []
    if (out / STATE).is_file():
        start, history = _load_state(out / STATE, model, ema, opt, g, r, seed)
    meta = {"recipe": r, "seed": seed}
    t0, spent = time.perf_counter(), sum(h.get("seconds", 0.0) for h in history[-1:])
    bar = tqdm(total=r["steps"], initial=start, desc="zoo glyphs", unit="step", disable=not progress)
    step, losses = start, []
    try:
        for step in range(start, r["steps"]):
            for group in opt.param_groups:
                group["lr"] = _lr(step, r["steps"], r["lr"], r["lr_warmup"], r["lr_final_frac"])
            idx = torch.randint(0, x_all.shape[0], (r["batch_size"],), generator=g)
            labels = y_all[idx].clone()
            labels[torch.rand(labels.shape[0], generator=g) < r["label_dropout"]] = r["null_label"]
            loss = edm_loss(model, x_all[idx], labels, g, r["P_mean"], r["P_std"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay = min(r["ema_decay"], (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - decay)
            losses.append(float(loss.detach()))
            bar.update(1)
            if (step + 1) % ckpt_every == 0 or step + 1 == r["steps"]:
                history.append({"step": step + 1, "loss": sum(losses) / len(losses),
                                "seconds": round(spent + time.perf_counter() - t0, 1)})
                losses = []
                _save_state(out / STATE, model, ema, opt, step + 1, g, {**meta, "history": history})
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
                step += 1
                break
        else:
            step = r["steps"]
    finally:
        bar.close()
    return _finish(out, ema, r, seed, step, history)


def _finish(out: Path, ema: EDMPrecond, r: dict[str, Any], seed: int, step: int, history: list[dict[str, Any]]) -> dict:
    weights = out / "glyphs-cond.safetensors"
    save_tensors(weights, {k: v.detach().float() for k, v in ema.net.state_dict().items()})
    meta = {"name": "zoo:glyphs", "recipe": r, "seed": seed, "steps": step, "steps_requested": r["steps"],
            "complete": step >= r["steps"], "training_time_s": history[-1]["seconds"] if history else 0.0,
            "history": history, "torch": torch.__version__, "threads": torch.get_num_threads(), "weights": weights.name,
            "sha256": sha256_file(weights), "faces_train": list(G.TRAIN_FACES), "faces_heldout": list(G.HELDOUT_FACES),
            "chars": G.CHARS}
    atomic_write_json(out / "glyphs-cond.json", meta)
    make_glyphs_reference(out)
    return meta


def glyphs_reference_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed seeded inputs for the load-faithfulness reference: x [8,1,16,16], sigma [8], cond [8] (62 = null)."""
    g = torch.Generator().manual_seed(20261202)
    sigma = torch.tensor([0.002, 0.05, 0.3, 1.0, 2.5, 8.0, 30.0, 80.0])
    x = torch.randn(8, 1, 16, 16, generator=g) * (sigma[:, None, None, None] ** 2 + 0.6**2).sqrt()
    return x, sigma, torch.tensor([0, 11, 23, 36, 44, 50, 61, 62])


def make_glyphs_reference(weights_dir: str | Path) -> Path:
    """The denoiser's output on `glyphs_reference_inputs()`, stored next to the weights (checked by the tests)."""
    d = Path(weights_dir)
    meta = json.loads((d / "glyphs-cond.json").read_text())
    model = build_glyphs_denoiser(meta["recipe"])
    model.net.load_state_dict(load_tensors(d / meta["weights"])[0])
    return write_reference(model, glyphs_reference_inputs(), d / "glyphs-cond-reference.safetensors")


def train_glyphs_classifier(out_dir: str | Path, seed: int = 0, steps: int | None = None, progress: bool = True) -> dict:
    """The glyph classifier whose 256-d penultimate features define FD-glyphs; held-out accuracy on the held-out split
    (other augmentation draws, half of it from the two faces never seen in training)."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = copy.deepcopy(GLYPHS_CLASSIFIER_RECIPE)
    if steps is not None:
        r["steps"] = int(steps)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = G.load_glyphs_tensor("train", seed=0)
    xh, yh = G.load_glyphs_tensor("heldout", seed=0)
    model = GlyphsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    t0 = time.perf_counter()
    for step in tqdm(range(r["steps"]), desc="glyphs classifier", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = _lr(step, r["steps"], r["lr"], 100, 0.01)
        idx = torch.randint(0, x.shape[0], (r["batch_size"],), generator=g)
        xb = x[idx] + r["noise_std"] * torch.randn(x[idx].shape, generator=g)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xh[i:i + 2000]).argmax(1) for i in range(0, len(xh), 2000)])
    weights = out / "glyphs-classifier.safetensors"
    save_tensors(weights, {k: v.detach().float() for k, v in model.state_dict().items()})
    meta = {"name": "glyphs-classifier", "recipe": r, "seed": seed, "training_time_s": round(time.perf_counter() - t0, 1),
            "heldout_accuracy": float((pred == yh).float().mean()), "num_features": GlyphsClassifier.num_features,
            "confusions": top_confusions(pred, yh, names=G.CHARS), "torch": torch.__version__, "weights": weights.name,
            "sha256": sha256_file(weights)}
    atomic_write_json(out / "glyphs-classifier.json", meta)
    return meta


def top_confusions(pred: torch.Tensor, true: torch.Tensor, k: int = 10, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The k most frequent (true -> predicted) mistakes, e.g. l -> I, O -> 0 (class `names`; None: the class numbers)."""
    names = names if names is not None else [str(i) for i in range(int(max(true.max(), pred.max())) + 1)]
    counts: dict[tuple[int, int], int] = {}
    for t, p in zip(true.tolist(), pred.tolist()):
        if t != p:
            counts[(t, p)] = counts.get((t, p), 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:k]
    return [{"true": names[t], "predicted": names[p], "count": n} for (t, p), n in top]
