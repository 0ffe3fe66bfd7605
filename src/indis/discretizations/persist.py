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

from . import registry

if TYPE_CHECKING:
    from ..models import ModelHandle

Discretizer = Any  # the base class (`base.Discretizer`); this module reaches it through `registry` only

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


_BEHAVIOUR = ("class", "method", "steps", "solver", "afs", "schedule", "data_shape", "t_max", "t_min", "kwargs")


def _check_config(cfg: Any, where: Path) -> dict[str, Any]:
    """Validate a config.json against the schema (types, ranges, known classes and methods, times); InputError names
    the file and the field."""
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise InputError(f"'{where}' is not an indis discretization config (no \"format\": \"{FORMAT}\")")
    v = cfg.get("format_version", 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InputError(f"'{where}': field 'format_version' must be a non-negative integer (this indis writes "
                         f"{FORMAT_VERSION}), got {v!r}")
    if v > FORMAT_VERSION:
        raise InputError(f"'{where}' has format_version {v}; this indis reads versions up to {FORMAT_VERSION} (upgrade indis)")
    for k in ("class", "steps", "solver", "schedule", "kwargs"):
        if k not in cfg:
            raise InputError(f"'{where}': missing field {k!r}; re-save the discretization with indis")
    for k, t in _FIELDS.items():
        if k in cfg and (not isinstance(cfg[k], t) or (t is int and isinstance(cfg[k], bool))):
            raise InputError(f"'{where}': field {k!r} must be {t.__name__}, got {cfg.get(k)!r}")
    klass = registry.CLASSES.get(cfg["class"])
    if klass is None or klass.method == "base":
        known = sorted(n for n, c in registry.CLASSES.items() if c.method != "base" and not n.startswith("_"))
        raise InputError(f"'{where}': field 'class' must be one of {', '.join(known)}, got {cfg['class']!r}")
    if "method" in cfg and cfg["method"] != klass.method:
        raise InputError(f"'{where}': field 'method' is {cfg['method']!r}, but a {cfg['class']} is method {klass.method!r}")
    if not 1 <= cfg["steps"] <= 100_000:
        raise InputError(f"'{where}': field 'steps' must be between 1 and 100000, got {cfg['steps']}")
    if cfg["solver"] not in klass.SOLVER_CHOICES:
        raise InputError(f"'{where}': field 'solver' must be one of {', '.join(klass.SOLVER_CHOICES)}, got {cfg['solver']!r}")
    shape = cfg.get("data_shape")
    if shape is not None and (not isinstance(shape, list) or not shape
                              or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise InputError(f"'{where}': field 'data_shape' must be a list of positive integers, got {shape!r}")
    for k in ("t_max", "t_min"):
        if cfg.get(k) is not None and (isinstance(cfg[k], bool) or not isinstance(cfg[k], (int, float)) or not math.isfinite(cfg[k])):
            raise InputError(f"'{where}': field {k!r} must be a finite number, got {cfg[k]!r}")
    _check_times(cfg, where)
    return cfg


def _check_times(cfg: dict[str, Any], where: Path) -> None:
    """Saved grids (kwargs.times, kwargs.init_times): N+1 finite, strictly decreasing times within [t_min, t_max]."""
    from ..schedules import schedule_from_config

    try:
        sched = schedule_from_config(cfg["schedule"])
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"'{where}': field 'schedule' is not a valid noise schedule ({exc})") from exc
    hi = cfg.get("t_max") if cfg.get("t_max") is not None else sched.t_max
    lo = cfg.get("t_min") if cfg.get("t_min") is not None else sched.t_min
    free_last = bool(cfg["kwargs"].get("free_last", False))
    for k in ("times", "init_times"):
        t = cfg["kwargs"].get(k)
        if t is None:
            continue
        name = f"kwargs.{k}"
        if (not isinstance(t, list) or len(t) != cfg["steps"] + 1
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in t)):
            raise InputError(f"'{where}': field {name!r} must be a list of N+1 = {cfg['steps'] + 1} finite numbers, got {t!r}")
        if any(b >= a for a, b in zip(t, t[1:])):
            raise InputError(f"'{where}': field {name!r} must be strictly decreasing, got {t}")
        tol = 1e-9 * max(1.0, abs(hi))
        if t[0] > hi + tol or (t[-1] < lo - tol and not (k == "times" and t[-1] == 0)) or (not free_last and k == "init_times"
                                                                                             and abs(t[-1] - lo) > tol):
            raise InputError(f"'{where}': field {name!r} runs from {t[0]:g} to {t[-1]:g}, outside the discretization's "
                             f"time range t_max={hi:g} .. t_min={lo:g} (fields 't_max', 't_min'); restore the saved values")


def _check_weights(cfg: dict[str, Any], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], p: Path,
                   wfile: Path) -> None:
    """The weights are finite, and config.json still says what the copy of the config saved inside them says."""
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"'{wfile}': tensor {k!r} contains NaN or Inf; re-train or re-save the discretization")
    if "indis_config" not in meta:
        return
    try:
        saved = json.loads(meta["indis_config"])
    except ValueError as exc:
        raise InputError(f"'{wfile}': its embedded config is not valid JSON ({exc}); re-save the discretization") from exc
    if saved.get("class") != cfg.get("class"):
        raise InputError(f"'{p}': config.json and {wfile.name} belong to different discretizations")
    for k in _BEHAVIOUR:
        if k in saved and saved[k] != cfg.get(k):
            raise InputError(f"'{p / 'config.json'}': field {k!r} = {json.dumps(cfg.get(k))[:80]} differs from the copy saved "
                             f"inside {wfile.name} ({json.dumps(saved[k])[:80]}): the config was edited after saving; "
                             "restore it (or re-save the discretization with indis)")


def load(path: str | Path, *, steps: int | None = None, data_shape: Sequence[int] | None = None,
         schedule: NoiseSchedule | None = None, map_location: str | torch.device = "cpu",
         model: "ModelHandle | None" = None, force: bool = False) -> "Discretizer":
    """Load a saved discretization (either format) and check it against N, data shape, schedule and the model."""
    p = Path(path)
    if p.is_file() and p.name in ("config.json",) + WEIGHTS:
        p = p.parent
    if not p.is_dir():
        raise InputError(f"no saved discretization at '{p}' (expected a folder with config.json and model.safetensors)")
    if not (p / "config.json").is_file():
        _not_a_discretization(p)
    cfg = _check_config(load_json(p / "config.json"), p / "config.json")
    wfile = next((p / w for w in WEIGHTS if (p / w).is_file()), p / WEIGHTS[0])
    tensors, meta = load_tensors(wfile, device=map_location)
    _check_weights(cfg, tensors, meta, p, wfile)
    try:
        obj = registry.build_from_config(cfg)
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


def _not_a_discretization(p: Path) -> None:
    """InputError saying what the folder is instead (a teacher set, a training run, samples) and where to look."""
    from ..io import ARTIFACTS, artifact_kinds

    kinds = artifact_kinds(p)
    if "train" in kinds and (p / "best" / "config.json").is_file():
        raise InputError(f"'{p}' is a training run, not a saved discretization; its result is '{p / 'best'}'")
    if kinds:
        what = ", ".join(ARTIFACTS[k] for k in sorted(kinds))
        raise InputError(f"'{p}' holds {what}, not a saved discretization (config.json + model.safetensors: the best/ "
                         "folder of `indis train --out` or the --out of `indis schedule`)")
    raise InputError(f"no saved discretization at '{p}': it has no config.json (expected the best/ folder of `indis train "
                     "--out` or the --out of `indis schedule`)")


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
