"""Training recipes for the shipped digits models (EDM denoiser and feature classifier).

Same seed and steps give the same weights on the same machine with single-thread CPU torch; bit-exactness across
machines or torch builds is not promised.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..io import save_tensors
from .digits import load_digits_tensor
from .nets import DigitsClassifier, EDMPrecond, TinyUNet

DENOISER_RECIPE: dict = {
    "arch": {"in_ch": 1, "ch": [24, 48], "emb_dim": 128, "num_classes": 10},
    "sigma_data": 0.75,  # std of the scaled training digits is 0.752
    "data": "sklearn load_digits, 8x8, train split (1500 of 1797), scaled 0..16 -> [-1, 1], no augmentation",
    "batch_size": 256,
    "lr": 2e-3,
    "lr_warmup": 500,
    "lr_final_frac": 0.05,
    "ema_decay": 0.999,
    "P_mean": -1.2,
    "P_std": 1.2,
    "label_dropout": 0.1,
    "null_label": 10,
}
CLASSIFIER_RECIPE: dict = {
    "data": "sklearn load_digits, 8x8, train split (1500 of 1797), scaled to [-1, 1]; aug: +-1 px shifts, gaussian noise",
    "batch_size": 128,
    "steps": 3000,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "noise_std": 0.1,
}


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _lr(step: int, steps: int, base: float, warmup: int, final_frac: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def edm_loss(model: EDMPrecond, x0: torch.Tensor, labels: torch.Tensor | None, g: torch.Generator,
             p_mean: float, p_std: float) -> torch.Tensor:
    """EDM training loss: log-normal sigma, weight (sigma^2 + sd^2) / (sigma sd)^2."""
    sd = model.sigma_data
    sigma = (torch.randn(x0.shape[0], generator=g) * p_std + p_mean).exp()
    noise = torch.randn(x0.shape, generator=g) * sigma[:, None, None, None]
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    d = model(x0 + noise, sigma, labels)
    return (weight[:, None, None, None] * (d - x0) ** 2).mean()


def build_denoiser(recipe: dict) -> EDMPrecond:
    a = recipe["arch"]
    return EDMPrecond(TinyUNet(in_ch=a["in_ch"], ch=tuple(a["ch"]), emb_dim=a["emb_dim"], num_classes=a["num_classes"]),
                      recipe["sigma_data"])


def train_digits(out_dir: str | Path, seed: int = 0, steps: int = 15000, minutes: float | None = None,
                 log_every: int = 250, reference: bool = True, verbose: bool = True) -> dict:
    """Train the class-conditional digits EDM denoiser (label dropout -> null label 10) and save EMA weights.

    Writes ``digits-cond.safetensors`` (float32 EMA weights), ``digits-cond.json`` (recipe, seed, time, losses,
    sha256) and, if ``reference``, ``digits-cond-reference.safetensors`` to ``out_dir``. ``minutes`` caps wall time
    (the run then stops early and is not reproducible by step count; the meta records the steps done).
    """
    if steps <= 0:
        raise InputError(f"steps must be positive, got {steps}")
    if minutes is not None and minutes <= 0:
        raise InputError(f"minutes must be positive, got {minutes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = copy.deepcopy(DENOISER_RECIPE)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = load_digits_tensor("train")
    model = build_denoiser(r)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
    n_classes = r["arch"]["num_classes"]
    t0 = time.perf_counter()
    history: list[dict] = []
    running, count, done = 0.0, 0, 0
    recent: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, r["lr"], r["lr_warmup"], r["lr_final_frac"])
        idx = torch.randint(0, x_all.shape[0], (r["batch_size"],), generator=g)
        labels = y_all[idx].clone()
        drop = torch.rand(labels.shape[0], generator=g) < r["label_dropout"]
        labels[drop] = n_classes
        loss = edm_loss(model, x_all[idx], labels, g, r["P_mean"], r["P_std"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(r["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        lv = float(loss.detach())
        running += lv
        count += 1
        recent = (recent + [lv])[-500:]
        done = step + 1
        if done % log_every == 0 or done == steps:
            el = time.perf_counter() - t0
            history.append({"step": done, "loss": running / count, "elapsed_s": round(el, 1)})
            if verbose:
                print(f"step {done}/{steps} loss {running / count:.4f} lr {opt.param_groups[0]['lr']:.2e} {el:.0f}s",
                      flush=True)
            running, count = 0.0, 0
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            break
    train_time = time.perf_counter() - t0
    weights = out / "digits-cond.safetensors"
    save_file({k: v.detach().float().contiguous() for k, v in ema.net.state_dict().items()}, str(weights))
    meta = {
        "name": "zoo:digits-cond",
        "recipe": r,
        "seed": seed,
        "steps": done,
        "steps_requested": steps,
        "training_time_s": round(train_time, 1),
        "final_loss_last500": sum(recent) / max(1, len(recent)),
        "history": history,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "note": "one class-conditional network trained with label dropout; 'zoo:digits' serves it with the "
                "learned null label (index 10) for every sample",
    }
    (out / "digits-cond.json").write_text(json.dumps(meta, indent=1))
    if reference:
        make_reference(out)
    return meta


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed seeded inputs for the load-faithfulness reference: x [8,1,8,8], sigma [8], cond [8] (10 = null)."""
    g = torch.Generator().manual_seed(20261124)
    sigma = torch.tensor([0.002, 0.05, 0.3, 1.0, 2.5, 8.0, 30.0, 80.0])
    x = torch.randn(8, 1, 8, 8, generator=g) * (sigma[:, None, None, None] ** 2 + 0.75**2).sqrt()
    cond = torch.tensor([0, 1, 2, 3, 7, 8, 9, 10])
    return x, sigma, cond


def make_reference(weights_dir: str | Path) -> Path:
    """Store the denoiser output on `reference_inputs()` next to the weights (checked by the tests)."""
    d = Path(weights_dir)
    r = json.loads((d / "digits-cond.json").read_text())["recipe"]
    model = build_denoiser(r)
    model.net.load_state_dict(load_file(str(d / "digits-cond.safetensors")))
    return write_reference(model, reference_inputs(), d / "digits-cond-reference.safetensors")


def write_reference(model: EDMPrecond, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], path: Path) -> Path:
    """Store a zoo denoiser's output on fixed inputs (x, sigma, cond) at `path`: the shipped-weights reference."""
    model.eval()
    x, sigma, cond = inputs
    with torch.no_grad():
        out = model(x, sigma, cond)
    save_tensors(path, {"x": x, "sigma": sigma, "cond": cond, "out": out})
    return path


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel shifts, padding with the background value -1."""
    b = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (b,), generator=g)
    dy = torch.randint(0, 3, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(8)[None])[:, :, None].expand(b, 8, 8)
    cols = (dx[:, None] + torch.arange(8)[None])[:, None, :].expand(b, 8, 8)
    bi = torch.arange(b)[:, None, None].expand(b, 8, 8)
    return padded[bi, 0, rows, cols][:, None]


def train_classifier(out_dir: str | Path, seed: int = 0, steps: int | None = None, verbose: bool = True) -> dict:
    """Train the digits feature classifier; writes digits-classifier.safetensors/.json to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = copy.deepcopy(CLASSIFIER_RECIPE)
    if steps is not None:
        r["steps"] = int(steps)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_digits_tensor("train")
    xh, yh = load_digits_tensor("heldout")
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    t0 = time.perf_counter()
    for step in range(r["steps"]):
        for group in opt.param_groups:
            group["lr"] = _lr(step, r["steps"], r["lr"], 100, 0.01)
        idx = torch.randint(0, x.shape[0], (r["batch_size"],), generator=g)
        xb = _shift(x[idx], g) + r["noise_std"] * torch.randn(r["batch_size"], 1, 8, 8, generator=g)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if verbose and (step + 1) % 500 == 0:
            print(f"classifier step {step + 1} loss {float(loss.detach()):.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        acc = float((model(xh).argmax(1) == yh).float().mean())
        train_acc = float((model(x).argmax(1) == y).float().mean())
    weights = out / "digits-classifier.safetensors"
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {"name": "digits-classifier", "recipe": r, "seed": seed, "training_time_s": round(time.perf_counter() - t0, 1),
            "heldout_accuracy": acc, "train_accuracy": train_acc, "num_features": DigitsClassifier.num_features,
            "torch": torch.__version__, "weights": weights.name, "sha256": sha256_file(weights)}
    (out / "digits-classifier.json").write_text(json.dumps(meta, indent=1))
    return meta
