"""Saving and loading discretizations like models: a folder with `config.json` (method, N, NFE, solver, AFS, schedule,
the model it was trained for, data shape, indis version), `model.safetensors` and a generated `README.md` model card;
`from_pretrained` takes such a folder or, online, a Hugging Face Hub repo id. Folders of the first format
(`weights.safetensors`, no card) keep loading. Every field read from disk is validated with the file named."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ..errors import InputError
from ..io import atomic_write_json, atomic_write_text, ensure_dir, load_json, load_tensors, save_tensors
from ..schedules import NoiseSchedule

if TYPE_CHECKING:
    from ..models import ModelHandle
    from .base import Discretizer

FORMAT = "indis-discretization"
FORMAT_VERSION = 2
WEIGHTS = ("model.safetensors", "weights.safetensors")  # current name first; version 1 wrote weights.safetensors
_FIELDS = {"class": str, "method": str, "steps": int, "solver": str, "afs": bool, "schedule": dict, "kwargs": dict,
           "extra": dict}


def model_info(handle: "ModelHandle") -> dict[str, Any]:
    """What a discretization records about the model it was made for (checked when it is loaded for a model)."""
    return {"spec": handle.spec, "data_shape": list(handle.data_shape), "cond_kind": handle.cond_kind,
            "num_classes": handle.num_classes, "prediction": handle.denoiser.prediction,
            "guidance": _float_or_none(handle.denoiser.guidance_scale), "guidance_range": handle.meta.get("guidance_range"),
            "schedule": handle.schedule.config()}


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def check_model(d: "Discretizer", handle: "ModelHandle", where: str, force: bool = False) -> None:
    """Refuse a discretization trained for another model (spec, condition kind, prediction) unless `force`."""
    info = d.extra.get("model_info") or {}
    if force or not info:
        return
    problems = []
    if info.get("spec") and handle.spec and info["spec"] != handle.spec:
        problems.append(f"it was trained for {info['spec']}, not {handle.spec}")
    if info.get("cond_kind") and info["cond_kind"] != handle.cond_kind:
        problems.append(f"its condition is {info['cond_kind']!r}, the model's is {handle.cond_kind!r}")
    if info.get("prediction") and info["prediction"] != handle.denoiser.prediction:
        problems.append(f"its model predicts {info['prediction']!r}, this one {handle.denoiser.prediction!r}")
    if problems:
        raise InputError(f"{where}: {'; '.join(problems)}; use a discretization made for this model, or force it "
                         "(force=True / --force) if you know they are interchangeable")


def config(d: "Discretizer") -> dict[str, Any]:
    import datetime as dt

    from .. import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "indis_version": __version__, "class": type(d).__name__,
            "method": d.method, "name": d.name, "steps": d.steps, "nfe": d.nfe, "solver": d.solver, "afs": d.afs,
            "schedule": d.schedule.config(), "data_shape": list(d.data_shape) if d.data_shape is not None else None,
            "model": d.extra.get("model_info"), "t_max": d.t_max, "t_min": d.t_min, "kwargs": d.init_kwargs(),
            "extra": d.extra, "saved": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}




def save(d: "Discretizer", path: str | Path, card: bool = True) -> Path:
    """Write `path/model.safetensors`, `path/config.json` (config last, both atomic) and `path/README.md`."""
    p = ensure_dir(path)
    cfg = config(d)
    save_tensors(p / WEIGHTS[0], dict(d.state_dict()), {"indis_config": json.dumps(cfg, sort_keys=True), "format": "pt"})
    if card:
        atomic_write_text(p / "README.md", model_card(cfg))
    atomic_write_json(p / "config.json", cfg)
    return p


def _check_config(cfg: Any, where: Path) -> dict[str, Any]:
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise InputError(f"'{where}' is not an indis discretization config (no \"format\": \"{FORMAT}\")")
    v = cfg.get("format_version", 0)
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise InputError(f"'{where}' has format_version {v!r}; this indis reads versions up to {FORMAT_VERSION} (upgrade indis)")
    for k, t in _FIELDS.items():
        if k in cfg and not isinstance(cfg[k], t) or (t is int and isinstance(cfg.get(k), bool)):
            raise InputError(f"'{where}': field {k!r} must be {t.__name__}, got {cfg.get(k)!r}")
    for k in ("class", "steps", "solver", "schedule"):
        if k not in cfg:
            raise InputError(f"'{where}': missing field {k!r}; re-save the discretization with indis")
    for k in ("t_max", "t_min"):
        if cfg.get(k) is not None and (not isinstance(cfg[k], (int, float)) or not math.isfinite(cfg[k])):
            raise InputError(f"'{where}': field {k!r} must be a finite number, got {cfg[k]!r}")
    return cfg


def load(path: str | Path, *, steps: int | None = None, data_shape: Sequence[int] | None = None,
         schedule: NoiseSchedule | None = None, map_location: str | torch.device = "cpu",
         model: "ModelHandle | None" = None, force: bool = False) -> "Discretizer":
    """Load a saved discretization (either format) and check it against N, data shape, schedule and the model."""
    from .base import Discretizer

    p = Path(path)
    if p.is_file() and p.name in ("config.json",) + WEIGHTS:
        p = p.parent
    if not p.is_dir():
        raise InputError(f"no saved discretization at '{p}' (expected a folder with config.json and model.safetensors)")
    cfg = _check_config(load_json(p / "config.json"), p / "config.json")
    wfile = next((p / w for w in WEIGHTS if (p / w).is_file()), p / WEIGHTS[0])
    tensors, meta = load_tensors(wfile, device=map_location)
    if "indis_config" in meta and json.loads(meta["indis_config"]).get("class") != cfg.get("class"):
        raise InputError(f"'{p}': config.json and {wfile.name} belong to different discretizations")
    try:
        obj = Discretizer.from_config(cfg)
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"'{p / 'config.json'}' describes an invalid discretization ({exc}); re-save it with indis") from exc
    try:
        obj.load_state_dict(tensors, strict=True, assign=True)  # keep the saved dtypes
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise InputError(f"weights in '{wfile}' do not match its config.json ({' '.join(lines[:3])[:400]})") from exc
    where = f"the discretization in '{p}'"
    obj.check_compatible(schedule, data_shape, steps, where=where)
    if model is not None:
        obj.check_compatible(model.schedule, model.data_shape, where=where)
        check_model(obj, model, where, force)
    return obj.to(map_location)


def from_pretrained(name_or_path: str | os.PathLike, **kw: Any) -> "Discretizer":
    """A discretization from a local folder, or from a Hugging Face Hub repo id (downloaded with huggingface_hub;
    refused with a clear message when offline). Keyword arguments are the checks of `load_discretization`."""
    p = Path(os.path.expanduser(str(name_or_path)))
    if p.exists():
        return load(p, **kw)
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise InputError(f"'{name}' is neither a local folder nor a Hub repo id (owner/name)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise InputError(f"'{name}' is not a local folder, and HF_HUB_OFFLINE is set, so it cannot be downloaded from the "
                         "Hugging Face Hub; download it while online or pass a local folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise InputError("loading from the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub)") from exc
    try:
        local = snapshot_download(name, allow_patterns=["config.json", "model.safetensors", "weights.safetensors", "README.md"])
    except Exception as exc:  # network, missing repo, authentication: one message
        raise InputError(f"cannot download '{name}' from the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    return load(local, **kw)


def model_card(cfg: Mapping[str, Any]) -> str:
    """README.md of a saved discretization: what it is, how it was made, how to use it."""
    ex = cfg.get("extra") or {}
    m = cfg.get("model") or {}
    tr = ex.get("train") or {}
    teacher = ex.get("teacher_info") or {}
    L = [f"# indis discretization: {cfg['method']} ({cfg.get('name', cfg['method'])})", "",
         f"A {'per-instance' if cfg['class'] in ('InstanceSchedule', 'AMED') else 'global'} few-step discretization "
         f"made with indis {cfg.get('indis_version', '')}.", "",
         "| field | value |", "|---|---|",
         f"| model | {m.get('spec', 'not recorded')} |", f"| data shape | {cfg.get('data_shape')} |",
         f"| condition | {m.get('cond_kind', '-')} |", f"| schedule | {cfg['schedule'].get('type')} |",
         f"| solver | {cfg['solver']}{' + AFS' if cfg.get('afs') else ''} |", f"| steps N / NFE | {cfg['steps']} / {cfg.get('nfe')} |"]
    if teacher:
        L.append(f"| teacher | {teacher.get('steps')}-step {teacher.get('solver')}, {teacher.get('num_samples')} pairs, seed "
                 f"{teacher.get('seed')} |")
    if tr:
        L.append(f"| training | {tr.get('iterations')} iterations ({tr.get('stop_reason')}), {tr.get('seconds')} s, loss {tr.get('loss')} |")
        L.append(f"| best validation loss (at save time) | {tr.get('best_val')} |")
    if ex.get("command"):
        L += ["", "Made with:", "", "```", ex["command"], "```"]
    L += ["", "## Use", "", "```python", "import indis", "d = indis.from_pretrained(\"PATH\")",
          f"handle = indis.load_model(\"{m.get('spec', 'MODEL')}\")",
          "x0 = d.sample(handle.denoiser, x_T, cond)  # x_T: [B, *data_shape] prior noise", "```", ""]
    if cfg["class"] in ("FixedSchedule", "GlobalSchedule"):
        L += ["In a diffusers pipeline:", "", "```python", "from indis.integrations.diffusers import IndisScheduler",
              "pipe.scheduler = IndisScheduler.from_discretization(d, pipe.scheduler.config)",
              "images = pipe(prompt, num_inference_steps=pipe.scheduler.num_model_calls).images", "```", ""]
    return "\n".join(L)
