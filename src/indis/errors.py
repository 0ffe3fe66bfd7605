"""Exception types: every user-facing failure is an IndisError with a message that names the problem and the fix."""
from __future__ import annotations


class IndisError(Exception):
    """Base class; the CLI prints its message on one line and exits with code 2."""


class InputError(IndisError, ValueError):
    """A bad argument, file or configuration supplied by the user."""


class ModelOutputError(IndisError, RuntimeError):
    """The model returned something unusable (NaN/Inf, wrong shape)."""


class MissingDependencyError(IndisError, ImportError):
    """An optional dependency is needed for this feature."""

    def __init__(self, package: str, feature: str, extra: str | None = None):
        hint = f"pip install 'indis[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the optional package '{package}', which is not installed; fix: {hint}")
        self.package = package


def require(package: str, feature: str, extra: str | None = None):
    """Import an optional dependency or raise MissingDependencyError naming the fix."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatch in tests
        raise MissingDependencyError(package, feature, extra) from exc
