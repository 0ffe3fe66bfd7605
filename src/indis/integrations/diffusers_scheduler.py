"""`IndisScheduler`: a diffusers scheduler that replays a global indis discretization (heuristic, GOD, LD3, GITS,
DMN) with indis' own solvers inside a stock pipeline:

    pipe.scheduler = IndisScheduler.from_discretization(d, pipe.scheduler.config)
    images = pipe(prompt, num_inference_steps=pipe.scheduler.num_model_calls).images

How: a stock pipeline calls the model at `scheduler.timesteps` and hands each output to `step`. The scheduler runs
`indis.sample` unchanged in a worker thread with a stand-in model: every model call of the solver is answered by the
pipeline's next model output, and `step` returns the state the solver wants evaluated next (or, after the last call,
its result). So the latents equal `sample_pipeline(pipe, discretization=d)` for every solver, including the learned
time shift (the timesteps are the shifted evaluation times) and output scale. With AFS the solver's first model call
is analytic; the pipeline still makes its first call, whose output is not used (one extra model call).
Per-instance schedules (INDIS, the oracle, AMED, EPD) need per-sample times inside one model call, which a stock
pipeline cannot pass: use `indis.integrations.diffusers.sample_pipeline` for them.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from ..denoiser import Denoiser
from ..discretizations.base import Discretizer, FixedSchedule, GlobalSchedule
from ..errors import InputError
from ..schedules import FlowMatching, schedule_from_config
from ..solvers import SOLVERS, sample
from ..priors import prior_std
from .diffusers_models import prediction_type as _prediction_of, vp_schedule

_DONE = object()


class _Cancelled(Exception):
    pass


def _schedule_for(config: Mapping[str, Any]):
    """indis schedule of a pipeline's scheduler config: flow matching, or the discrete VP of its betas."""
    name = str(config.get("_class_name", ""))
    flow_keys = "use_dynamic_shifting" in config and "beta_start" not in config  # FlowMatchEuler / Heun schedulers
    if "FlowMatch" in name or flow_keys or config.get("prediction_type") == "flow_prediction":
        return FlowMatching(t_max=0.999, t_min=0.0), "velocity", 1000.0
    return vp_schedule(config), _prediction_of(config), 1.0


def _check_discretization(d: Discretizer, config: Mapping[str, Any]) -> tuple[torch.Tensor, Any, Any]:
    if not isinstance(d, (FixedSchedule, GlobalSchedule)):
        raise InputError(f"a {d.method} discretization chooses its times per sample, which a stock diffusers pipeline "
                         "cannot pass to the model; sample with indis.integrations.diffusers.sample_pipeline(pipe, "
                         "discretization=d) instead")
    sched, pred, _ = _schedule_for(config)
    if d.schedule.name != sched.name or d.schedule.config().get("discrete") != sched.config().get("discrete"):
        raise InputError(f"the discretization was made for the {d.schedule.name} schedule but the pipeline's scheduler "
                         f"config describes {sched.name}")
    made_for = (d.extra.get("model_info") or {}).get("prediction")
    if made_for is not None and made_for != pred:
        raise InputError(f"the discretization was trained for a model predicting {made_for!r} but the pipeline's scheduler "
                         f"config says prediction_type {config.get('prediction_type')!r} ({pred!r})")
    with torch.no_grad():
        s = d(torch.zeros(1, *(d.data_shape or (1,)), dtype=torch.float64))
    return s.times[0], None if s.shift is None else s.shift[0], None if s.scale is None else s.scale[0]


def _config_of(d: Discretizer) -> dict[str, Any]:
    """A stand-in pipeline scheduler config from the discretization itself (export without a pipeline)."""
    pred = (d.extra.get("model_info") or {}).get("prediction")
    if pred is None:
        raise InputError("this discretization does not record its model's prediction type; pass the pipeline's scheduler "
                         "config (IndisScheduler.from_discretization(d, pipe.scheduler.config))")
    names = {"eps": "epsilon", "v": "v_prediction", "x0": "sample", "velocity": "flow_prediction"}
    sc = d.schedule.config()
    if sc.get("type") == "flow":
        if pred != "velocity":
            raise InputError(f"this discretization was trained for a flow-matching model predicting {pred!r}, while "
                             "diffusers flow-matching schedulers take velocity predictions; pass the pipeline's scheduler "
                             "config (IndisScheduler.from_discretization(d, pipe.scheduler.config), or indis export "
                             "--pipeline-config FILE)")
        return {"_class_name": "FlowMatchEulerDiscreteScheduler", "prediction_type": "flow_prediction"}
    if sc.get("type") != "vp" or not sc.get("discrete"):
        raise InputError(f"diffusers pipelines use discrete VP (DDPM) or flow-matching schedules; this discretization was "
                         f"made for {d.schedule.name}")
    return {"_class_name": "DDIMScheduler", "prediction_type": names[pred], "num_train_timesteps": sc["num_train_timesteps"],
            "beta_start": sc["beta_start"], "beta_end": sc["beta_end"], "beta_schedule": sc["beta_schedule"]}


class IndisScheduler(SchedulerMixin, ConfigMixin):
    """Replays `times` (N+1, the schedule's own time), per-step `shift` and `scale` with indis' `solver`."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, times: list[float] | None = None, shift: list[float] | None = None, scale: list[float] | None = None,
                 solver: str = "ipndm", afs: bool = False, schedule: dict[str, Any] | None = None, prediction_type: str = "epsilon",
                 timestep_scale: float = 1.0, solver_options: dict[str, Any] | None = None, num_train_timesteps: int = 1000,
                 discretization: dict[str, Any] | None = None):
        if times is None or schedule is None:
            raise InputError("IndisScheduler needs times and schedule; build it with IndisScheduler.from_discretization(d, pipe.scheduler.config)")
        if solver not in SOLVERS:
            raise InputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        self.schedule = schedule_from_config(schedule)
        pred = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "velocity"}.get(prediction_type, prediction_type)
        self._den = Denoiser(self._remote, self.schedule, pred)
        self._times = torch.tensor(times, dtype=torch.float64)
        self._shift = None if shift is None else torch.tensor(shift, dtype=torch.float64)
        self._scale = None if scale is None else torch.tensor(scale, dtype=torch.float64)
        self.init_noise_sigma = prior_std(self.schedule, float(times[0]))
        self.eval_times = self._dry_run()
        self.timesteps = torch.tensor(self.eval_times, dtype=torch.float32) * float(timestep_scale)
        self._worker: threading.Thread | None = None
        self._begin_index = 0

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any = None, subfolder: str | None = None, **kw: Any) -> Any:
        """diffusers' loader, with a clear error for a local folder that holds no scheduler config (e.g. a saved indis
        discretization, which `from_discretization` turns into a scheduler)."""
        folder = Path(str(pretrained_model_name_or_path)) / (subfolder or "")
        if folder.is_dir() and not (folder / cls.config_name).is_file():
            from ..io import ARTIFACTS, artifact_kinds

            kinds = artifact_kinds(folder)
            if "discretization" in kinds:
                raise InputError(f"'{folder}' is a saved indis discretization, not a scheduler folder; use "
                                 "IndisScheduler.from_discretization(indis.from_pretrained(FOLDER), pipe.scheduler.config) "
                                 "or `indis export --format diffusers`")
            what = f" (it holds {', '.join(ARTIFACTS[k] for k in sorted(kinds))})" if kinds else ""
            raise InputError(f"'{folder}' has no {cls.config_name}{what}; give the folder `indis export --format diffusers` "
                             "or `pipe.save_pretrained` wrote the scheduler to")
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kw)

    @classmethod
    def from_discretization(cls, discretization: Discretizer, pipeline_scheduler_config: Mapping[str, Any] | None = None,
                            **solver_options: Any) -> "IndisScheduler":
        """A scheduler for a pipeline whose current scheduler config is given (its betas / flow settings and
        prediction type); `discretization` must be global (heuristic, GOD, LD3, GITS, DMN). Without a config, the
        discretization's own schedule and the prediction type of the model it was trained for are used."""
        if not isinstance(discretization, Discretizer):
            raise InputError(f"discretization must be an indis Discretizer, got {type(discretization).__name__}")
        if pipeline_scheduler_config is None:
            pipeline_scheduler_config = _config_of(discretization)
        config = dict(getattr(pipeline_scheduler_config, "config", pipeline_scheduler_config))
        times, shift, scale = _check_discretization(discretization, config)
        sched, pred, tscale = _schedule_for(config)
        if discretization.schedule.config() != sched.config():  # same family, other constants (betas, range)
            sched = discretization.schedule
        return cls(times=times.tolist(), shift=None if shift is None else shift.tolist(), scale=None if scale is None else scale.tolist(),
                   solver=discretization.solver, afs=discretization.afs, schedule=sched.config(),
                   prediction_type=config.get("prediction_type", "epsilon") if pred != "velocity" else "flow_prediction",
                   timestep_scale=tscale, solver_options=solver_options or None,
                   num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                   discretization={"method": discretization.method, "name": discretization.name, "steps": discretization.steps})

    # -- what the pipeline sees ----------------------------------------------------------------------------------
    @property
    def num_model_calls(self) -> int:
        """The `num_inference_steps` to pass to the pipeline: the solver's model calls (+1 unused call with AFS)."""
        return len(self.eval_times)

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: Any = None, timesteps: Any = None, mu: float | None = None, **_: Any) -> None:
        """Check the pipeline's step count; the times themselves come from the discretization."""
        n = num_inference_steps if num_inference_steps is not None else len(sigmas if sigmas is not None else timesteps or [])
        if n != self.num_model_calls:
            cfg = self.config
            raise InputError(f"this IndisScheduler replays {cfg.discretization or 'a discretization'} with {self.config.solver} "
                             f"({len(self.config.times) - 1} steps{', AFS' if cfg.afs else ''}), which makes "
                             f"{self.num_model_calls} model calls; the pipeline asked for num_inference_steps={n}")
        self._cancel()
        self.timesteps = self.timesteps.to(device) if device is not None else self.timesteps

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             eta: float = 0.0, **_: Any) -> SchedulerOutput | tuple[torch.Tensor]:
        """Feed one model output to the solver; return the state it wants evaluated next (or its final result)."""
        if eta:
            raise InputError(f"IndisScheduler integrates the probability-flow ODE; eta must be 0, got {eta}")
        if self._worker is None:
            self._start(sample)
            kind, payload = self._next()
            if kind == "call" and not self.config.afs:  # the pipeline's first output answers the solver's first call
                self._answer.put(model_output)
                kind, payload = self._next()
        else:
            self._answer.put(model_output)
            kind, payload = self._next()
        out = payload if kind == "done" else payload[0]
        if kind == "done":
            self._worker = None
        return SchedulerOutput(prev_sample=out) if return_dict else (out,)

    # -- the solver in a worker thread ---------------------------------------------------------------------------
    def _solve(self, den: Denoiser, x_T: torch.Tensor) -> torch.Tensor:
        t = self._times.to(device=x_T.device, dtype=x_T.dtype)
        kw = dict(self.config.solver_options or {})
        return sample(den, x_T, t, solver=self.config.solver, shift=self._shift, scale=self._scale, afs=self.config.afs, **kw)

    def _dry_run(self) -> list[float]:
        """The evaluation times the solver will ask for, in order (a run on a zero model)."""
        seen: list[float] = []

        def zero(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
            seen.append(float(t.flatten()[0]))
            return torch.zeros_like(x)

        self._solve(Denoiser(zero, self.schedule, "x0"), torch.zeros(1, 1, dtype=torch.float64))
        return ([float(self._times[0])] if self.config.afs else []) + seen

    def _remote(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The model inside the worker: hand (x, t) to the pipeline's next model call and wait for its output."""
        self._calls.put(("call", (x, t)))
        out = self._answer.get()
        if out is _DONE:
            raise _Cancelled
        return out.to(x.dtype)

    def _start(self, x_T: torch.Tensor) -> None:
        self._calls: queue.Queue = queue.Queue()
        self._answer: queue.Queue = queue.Queue()
        grad = torch.is_grad_enabled()  # grad mode is per thread: the worker follows the pipeline's (no_grad)

        def work() -> None:
            try:
                with torch.set_grad_enabled(grad):
                    self._calls.put(("done", self._solve(self._den, x_T)))
            except _Cancelled:
                pass
            except BaseException as exc:  # handed to the pipeline's thread and raised there
                self._calls.put(("error", exc))

        self._worker = threading.Thread(target=work, name="indis-scheduler", daemon=True)
        self._worker.start()

    def _next(self) -> tuple[str, Any]:
        kind, payload = self._calls.get()
        if kind == "error":
            self._worker = None
            raise payload
        return kind, payload

    def _cancel(self) -> None:
        """Stop a solve that a previous, interrupted pipeline call left waiting."""
        if self._worker is not None and self._worker.is_alive():
            self._answer.put(_DONE)
            self._worker.join(timeout=10)
        self._worker = None
