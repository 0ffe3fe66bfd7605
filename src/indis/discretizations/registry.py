"""The discretization classes by name (`config.json`'s "class"), and building one from its saved config: what the
base class and persistence both need, kept below both so that neither imports the other's module back."""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import InputError
from ..schedules import schedule_from_config

CLASSES: dict[str, type] = {}


def register(cls: type) -> None:
    CLASSES[cls.__name__] = cls


def build_from_config(cfg: Mapping[str, Any]) -> Any:
    """The discretization a saved config describes (weights not loaded)."""
    klass = CLASSES.get(cfg.get("class", ""))
    if klass is None:
        raise InputError(f"unknown discretization class {cfg.get('class')!r}")
    obj = klass(steps=int(cfg["steps"]), schedule=schedule_from_config(cfg["schedule"]), solver=cfg["solver"],
                afs=bool(cfg.get("afs", False)), data_shape=cfg.get("data_shape"), t_max=cfg.get("t_max"),
                t_min=cfg.get("t_min"), name=cfg.get("name"), **cfg.get("kwargs", {}))
    obj.extra = dict(cfg.get("extra", {}))
    return obj
