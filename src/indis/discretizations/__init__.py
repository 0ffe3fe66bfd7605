"""Every way of choosing the N timesteps, returning the same kind of object (`Discretizer` -> `Steps`).

- heuristics: uniform, logsnr, edm (rho), quadratic, time_uniform / time_quadratic (VP-fitted), shift, rds, ays
- global: GlobalSchedule (GOD / LD3), gits, dmn
- instance-aware: InstanceSchedule (INDIS phi), InstanceOracle (per-sample upper bound)
- learned solvers: AMED (per-sample intermediate times from a predictor), EPD (K parallel directions per step)
"""
from .base import (Discretizer, FixedSchedule, GlobalSchedule, InstanceOracle, InstanceSchedule, Steps,
                   load_discretization)
from .amed import AMED, amed_steps
from .dmn import dmn, dmn_objective
from .epd import EPD
from .gits import gits, gits_cost_matrix, gits_dp, gits_teacher
from .heuristics import (AYS_SIGMAS, HEURISTICS, ays, ays_sigmas, edm, fitted_vp_betas, flow_shift, heuristic, logsnr,
                        quadratic, rds, rds_mu, time_quadratic, time_uniform, uniform)
from .param import logits_to_times, times_to_logits

__all__ = [
    "AMED", "EPD", "amed_steps", "Discretizer", "FixedSchedule", "GlobalSchedule", "InstanceOracle", "InstanceSchedule", "Steps", "load_discretization",
    "dmn", "dmn_objective", "gits", "gits_cost_matrix", "gits_dp", "gits_teacher", "AYS_SIGMAS", "HEURISTICS", "ays",
    "ays_sigmas", "edm", "fitted_vp_betas", "flow_shift", "heuristic", "logsnr", "quadratic", "rds", "rds_mu",
    "time_quadratic", "time_uniform", "uniform", "logits_to_times", "times_to_logits",
]
