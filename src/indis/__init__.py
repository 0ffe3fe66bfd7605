"""indis: few-step diffusion and flow-matching sampling with instance-aware discretizations (INDIS).

    import indis
    den = indis.Denoiser(model, indis.EDM(), prediction="x0")
    times = indis.heuristic("edm", 5, den.schedule)
    x0 = indis.sample(den, x_T, times, solver="ipndm")
"""
from .denoiser import PREDICTIONS, Denoiser
from .errors import IndisError, InputError, ModelOutputError
from .schedules import EDM, VP, FlowMatching, NoiseSchedule, get_schedule, schedule_from_config
from .solvers import SOLVERS, Trajectory, sample, solver_nfe
from .discretizations import (Discretizer, FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule, Steps,
                              dmn, gits, heuristic, load_discretization)
from .models import ModelHandle, load_model
from .teacher import TeacherSet, generate_teacher
from .training import TrainConfig, train_discretizer
from .discretizations.persist import from_pretrained, model_info


def __getattr__(name: str):
    """`indis.IndisScheduler` (the diffusers scheduler) is defined on first use: diffusers is optional. diffusers looks
    custom schedulers up in the top-level package when it loads a saved pipeline."""
    if name == "IndisScheduler":
        from .integrations.diffusers import IndisScheduler

        return IndisScheduler
    raise AttributeError(f"module 'indis' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "Denoiser", "PREDICTIONS", "EDM", "VP", "FlowMatching", "NoiseSchedule", "get_schedule", "schedule_from_config",
    "SOLVERS", "Trajectory", "sample", "solver_nfe", "IndisError", "InputError", "ModelOutputError", "__version__",
    "Discretizer", "FixedSchedule", "GlobalSchedule", "InstanceOracle", "InstanceSchedule", "Steps", "dmn", "gits",
    "heuristic", "load_discretization", "ModelHandle", "load_model", "TeacherSet", "generate_teacher", "TrainConfig",
    "train_discretizer", "from_pretrained", "model_info",
]
