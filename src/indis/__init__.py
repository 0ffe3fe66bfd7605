"""indis: few-step diffusion and flow-matching sampling with instance-aware discretizations (INDIS).

    import indis
    den = indis.Denoiser(model, indis.EDM(), prediction="x0")
    times = indis.heuristic("edm", steps=5, schedule=den.schedule)
    x0 = indis.sample(den, x_T, times, solver="ipndm")
"""
from .denoiser import PREDICTIONS, Denoiser
from .errors import IndisError, InputError, ModelOutputError
from .schedules import EDM, VP, FlowMatching, NoiseSchedule, get_schedule, schedule_from_config
from .solvers import SOLVERS, Trajectory, sample, solver_nfe

__version__ = "0.1.0"

__all__ = [
    "Denoiser", "PREDICTIONS", "EDM", "VP", "FlowMatching", "NoiseSchedule", "get_schedule", "schedule_from_config",
    "SOLVERS", "Trajectory", "sample", "solver_nfe", "IndisError", "InputError", "ModelOutputError", "__version__",
]
