"""One seed of `indis bench digits`: the paper's table-1 protocol on the shipped digits model, on the experiment
layer (`indis.experiment`): train / validation / test priors from distinct seeds, every choice made on validation.

Protocol for every row at each NFE:
- fixed schedules (uniform, logsnr, edm, quadratic, DMN, GITS) are evaluated under every solver configuration in
  {iPNDM, DPM-Solver++(3M), UniPC} x {AFS off, on} on the validation priors; the lowest validation FD is reported
  (the best heuristic is chosen over the four candidates as well);
- learned global schedules (GOD, LD3) probe every configuration for `probe` iterations and train the one with the
  lowest validation loss under the budget rule (multi-start, plateau learning rate, validation patience);
- the learned solvers AMED and EPD train as their reference code trains them (objective, teacher, optimiser, budget,
  final weights: `SOLVER_RECIPES`), in every configuration (own solver or the iPNDM plugin, AFS at odd NFE as in
  the references, x base schedule), and the configuration with the lowest validation FD is reported;
- INDIS warm-starts from the better (validation loss) of the trained GOD and LD3 and trains under its configuration.
A second table repeats the protocol with iPNDM only. Test priors produce the reported numbers and nothing else.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..discretizations.amed import amed_steps
from ..experiment import Experiment, ExperimentConfig, best_rate
from ..io import atomic_write_json, load_json, load_tensors, save_tensors
from ..methods import fixed, global_starts, learned
from ..models import ModelHandle
from ..solvers import steps_for_nfe
from ..training import TrainConfig

CONFIGS = tuple((s, a) for s in ("ipndm", "dpmpp_3m", "unipc") for a in (False, True))
HEURISTICS = ("uniform", "logsnr", "edm", "quadratic")
FIXED = HEURISTICS + ("dmn", "gits")
ROWS = ("best-heuristic", "dmn", "gits", "ld3", "god", "amed", "epd", "indis")  # the main table, in the order run
SOLVER_METHODS = {"amed": ("amed", "ipndm"), "epd": ("epd", "ipndm")}
SPLIT_BASES = ("edm", "logsnr", "time_uniform")  # AMED/EPD base schedules probed (their references use edm/time_uniform)
#: AMED / EPD training as their reference code does it (`indis.discretizations.amed/epd.REFERENCE_TRAINING`): one pass
#: over `priors` training priors; EPD's endpoint loss is the MSE of the FD classifier's features (the reference: of
#: FID's Inception features), its validation loss too.
SOLVER_RECIPES = {
    "amed": {"lr": 5e-3, "batch": 128, "priors": 10_000, "lr_schedule": "constant", "min_lr_ratio": 1.0, "grad_clip": 0.0,
             "keep": "last", "loss": "mse"},
    "epd": {"lr": 0.2, "batch": 32, "priors": 10_000, "lr_schedule": "cosine", "min_lr_ratio": 0.05, "grad_clip": 0.0,
            "keep": "last", "loss": "{features}-features"},  # the model's own feature set (digits, glyphs)
}
LONG_PASSES = 4  # the AMED/EPD winner is retrained over this many passes of the priors (kept if validation is lower)
ABLATIONS = {"full": {}, "no-instance": {"use_instance": False}, "no-shift": {"learn_shift": False},
             "no-scale": {"learn_scale": False}, "times-only": {"learn_shift": False, "learn_scale": False},
             "no-class": {"use_cond": False}, "plus-denoised": {"denoised_input": True},
             "plus-projected": {"input_basis": 16, "denoised_input": True}}
#: the ablation switches that are phi's options
PHI_SWITCHES = ("use_instance", "use_cond", "denoised_input", "input_basis")


def configs_for(method: str, nfe: int, table: str) -> list[tuple[str, bool]]:
    """(solver, afs) candidates of `method` at `nfe` for the main table or the iPNDM-only table."""
    if method in SOLVER_METHODS:
        afs = nfe % 2 == 1  # AMED/EPD: two calls per step, AFS reaches odd NFE (their reference protocol)
        solvers = SOLVER_METHODS[method] if table == "main" else ("ipndm",)
        return [(s, afs) for s in solvers]
    return [c for c in CONFIGS if table == "main" or c[0] == "ipndm"]


def _key(c: tuple[str, bool, str | None]) -> str:
    return f"{c[0]}{'+afs' if c[1] else ''}{'' if c[2] is None else '/' + c[2]}"


def steps_of(method: str, nfe: int, solver: str, afs: bool) -> int:
    return amed_steps(nfe, afs) if method in SOLVER_METHODS else steps_for_nfe(solver, nfe, afs)


class DigitsRun:
    """Runs, selects and evaluates every method of the protocol for one seed; results cached on disk."""

    def __init__(self, s: dict[str, Any], seed: int, root: Path, handle: ModelHandle, *, device: str = "cpu",
                 progress: bool = True, log: Callable[[str], None] | None = None):
        from ..metrics.features import extractor, real_features
        from ..zoo import classifier_for

        self.s, self.seed, self.h, self.log = s, seed, handle, log or (lambda m: None)
        self.loss = s.get("loss", "mse")
        cfg = ExperimentConfig(model=s["model"], seed=seed, sizes={"train": s["train"], "val": s["val"], "test": s["test"]},
                               guidance=s.get("guidance"))
        self.exp = Experiment(root / f"seed-{seed}", handle, cfg, device=device, progress=progress, log=self.log,
                              eval_batch=s.get("eval_batch", 500))
        self.cond = handle.cond_kind == "class"
        self.feature_set = classifier_for(s["model"])
        self.extractor = extractor(self.feature_set)
        self.real_all, self.real_heldout = real_features(self.feature_set, "all"), real_features(self.feature_set, "heldout")
        self._teacher_feats: np.ndarray | None = None
        self._gits_cache: dict = {}

    # -- metrics --------------------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.extractor.features(x.detach().float().cpu()).double().numpy()

    def teacher_features(self) -> np.ndarray:
        """Features of the training split's teacher endpoints: the target the schedules are trained to reach."""
        if self._teacher_feats is None:
            self._teacher_feats = self.features(self.exp.data("train")[3])
        return self._teacher_feats

    def val_score(self, spec: dict[str, Any], disc) -> dict[str, float]:
        """FD (vs all real digits) and teacher-MSE of `disc` on the validation priors, cached with the run."""
        from ..metrics.features import frechet_distance

        f = self.exp.run_dir(spec) / "val.json"
        if f.is_file():
            return load_json(f)
        x = self.exp.samples(spec, disc, "val")
        x0 = self.exp.data("val")[3]
        r = {"fd": frechet_distance(self.features(x), self.real_all), "mse": float((x - x0).pow(2).flatten(1).mean(1).mean())}
        atomic_write_json(f, r)
        return r

    def test_record(self, spec: dict[str, Any], disc, limit: int | None = None) -> dict[str, Any]:
        """Every reported metric on the test priors; features and per-prior MSE are kept for paired bootstraps."""
        from ..metrics.features import frechet_distance, kid

        folder = self.exp.run_dir(spec)
        tag = "test" if limit is None else f"test{limit}"
        f = folder / f"{tag}.json"
        if f.is_file():
            return load_json(f)
        x = self.exp.samples(spec, disc, "test", limit=limit)
        _, _, c, x0 = self.exp.data("test")
        x0 = x0[: x.shape[0]]
        feats = self.features(x)
        mse = (x - x0).pow(2).flatten(1).mean(1)
        km, ks = kid(feats, self.real_all, subsets=100, subset_size=min(1000, len(feats), len(self.real_all)), seed=0)
        r = {"fd": frechet_distance(feats, self.real_all), "fd_heldout": frechet_distance(feats, self.real_heldout),
             "fd_teacher": frechet_distance(feats, self.teacher_features()), "kid": km, "kid_std": ks,
             "mse": float(mse.mean()), "n": int(x.shape[0])}
        if self.cond:
            r["accuracy"] = float((self.extractor.predict(x.float().cpu()) == c[: x.shape[0]].cpu()).float().mean())
        save_tensors(folder / f"{tag}-rows.safetensors", {"features": torch.from_numpy(feats).float(), "mse": mse.double().cpu()})
        atomic_write_json(f, r)
        return r

    def rows(self, spec: dict[str, Any], limit: int | None = None) -> dict[str, np.ndarray]:
        tag = "test" if limit is None else f"test{limit}"
        t, _ = load_tensors(self.exp.run_dir(spec) / f"{tag}-rows.safetensors")
        return {"features": t["features"].double().numpy(), "mse": t["mse"].numpy()}

    # -- building methods -----------------------------------------------------------------------------------------
    def recipe(self, method: str) -> dict[str, Any]:
        """AMED/EPD's reference recipe with this model's feature loss filled in."""
        r = dict(SOLVER_RECIPES[method])
        r["loss"] = r["loss"].format(features=self.feature_set)
        return r

    def spec(self, method: str, nfe: int, solver: str, afs: bool, lr: float | None = None, **extra: Any) -> dict[str, Any]:
        steps = steps_of(method, nfe, solver, afs)
        sp = {"method": method, "nfe": nfe, "solver": solver, "afs": afs, "steps": steps, **extra}
        if method in SOLVER_RECIPES:
            r = self.recipe(method)
            sp["train"] = {**r, "priors": min(r["priors"], self.s["train"]), "val_train": self.s["val_train"]}
        elif method in self.s["lr"]:
            keys = ("batch", "patience", "val_every", "cap", "probe", "val_train", "starts")
            sp["train"] = {k: self.s[k] for k in keys} | {"lr": self.s["lr"][method] if lr is None else lr}
            if self.loss != "mse":  # absent for the default, so runs cached before the option existed are found
                sp["train"]["loss"] = self.loss
        if method == "indis":
            sp["phi"] = dict(self.s["phi"])
        if method == "gits":
            sp["warmup"] = self.s["gits_warmup"]
        return sp

    def fixed(self, method: str, nfe: int, solver: str, afs: bool):
        sp = self.spec(method, nfe, solver, afs)
        kw = {"warmup": self.s["gits_warmup"], "seed": self.exp.teacher("train").config.seed,
              "cache": self._gits_cache} if method == "gits" else {}  # one GITS teacher for every solver and NFE
        d, info = self.exp.fixed(sp, lambda: fixed(self.h, method, sp["steps"], solver, afs=afs, **kw))
        d.afs = afs
        return sp, d, info

    def train_cfg(self, method: str, probe: bool = False, **over: Any) -> TrainConfig:
        s, steps, passes, lr = self.s, over.pop("steps", 1), over.pop("passes", 1), over.pop("lr", None)
        if method in SOLVER_RECIPES:  # `passes` over the priors (the reference: one), validated at the end, final weights
            r = self.recipe(method)
            r["priors"] = min(r["priors"], s["train"])
            it = passes * math.ceil(r["priors"] / r["batch"])
            return TrainConfig(iterations=it, batch_size=r["batch"], lr=r["lr"], lr_schedule=r["lr_schedule"],
                               min_lr_ratio=r["min_lr_ratio"], grad_clip=r["grad_clip"], keep=r["keep"], loss=r["loss"],
                               val_every=it, patience=0, seed=self.seed, ckpt_every=max(50, s["val_every"]),
                               val_indices=list(range(min(s["val_train"], s["val"]))))
        radius = 0.001 * math.prod(self.h.data_shape) / steps**2 if method == "ld3" else 0.0  # LD3's soft bound
        base = dict(iterations=s["probe"] if probe else s["cap"], batch_size=s["batch"], lr=s["lr"][method] if lr is None else lr,
                    patience=0 if probe else s["patience"], val_every=s["probe"] if probe else s["val_every"],
                    optimizer="rmsprop" if method == "ld3" else "adam", noise_radius=radius, seed=self.seed,
                    val_indices=list(range(min(s["val_train"], s["val"]))), ckpt_every=max(50, s["val_every"]), loss=self.loss)
        return TrainConfig(**{**base, **over})

    def build(self, method: str, sp: dict[str, Any], **kw: Any) -> Callable[[Any], Any]:
        def make(init: Any):
            torch.manual_seed(self.seed)
            return learned(self.h, method, sp["steps"], sp["solver"], afs=sp["afs"], init=init, seed=self.seed, **kw)
        return make

    def starts(self, method: str) -> list[Any]:
        if method in ("god", "ld3"):
            return global_starts(self.h, self.s["starts"], first="logsnr")
        return [None]

    # -- the protocol ---------------------------------------------------------------------------------------------
    def _row(self, sp: dict[str, Any], disc, info: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
        return {"spec": sp, "run": str(self.exp.run_dir(sp)), "val": self.val_score(sp, disc), "test": self.test_record(sp, disc),
                "train": info, "choice": choice}

    def fixed_row(self, row: str, nfe: int, table: str) -> dict[str, Any]:
        """The lowest validation FD over the configurations (and, for the best heuristic, over the candidates)."""
        cands = HEURISTICS if row == "best-heuristic" else (row,)
        scored = []
        for m in cands:
            for solver, afs in configs_for(m, nfe, table):
                sp, d, info = self.fixed(m, nfe, solver, afs)
                scored.append((self.val_score(sp, d)[self.s["select"]], sp, d, info))
        val, sp, d, info = min(scored, key=lambda t: t[0])
        choice = {"by": f"validation {self.s['select']}", "candidates": {
            f"{c[1]['method']}/{c[1]['solver']}{'+afs' if c[1]['afs'] else ''}": round(c[0], 5) for c in scored}}
        return self._row(sp, d, info, choice)

    def learned_run(self, method: str, nfe: int, solver: str, afs: bool, *, probe: bool = False, lr: float | None = None,
                    **kw: Any):
        extra = {"probe": True} if probe else {}
        if kw.get("base") is not None:
            extra["base"] = kw["base"]
        variant = kw.pop("variant", None)
        if variant:
            extra["variant"] = variant
        passes = kw.pop("passes", 1)
        if passes != 1:  # AMED / EPD: the reference recipe over more passes (absent for one: cached specs stay valid)
            extra["passes"] = passes
        warm = kw.pop("warm", None)
        if warm is not None:  # by folder name (itself a hash of the warm run's settings): stable if the output moves
            extra["warm"] = Path(warm["run"]).name
        sp = self.spec(method, nfe, solver, afs, lr=lr, **extra)
        if warm is not None:  # runs written when the spec held the warm run's path (through a link or not)
            self.exp.adopt(sp, [{**sp, "warm": p} for p in dict.fromkeys([warm["run"], str(Path(warm["run"]).resolve())])])
        cfg = self.train_cfg(method, probe, steps=sp["steps"], passes=passes, lr=lr)
        starts = [str(Path(warm["run"]) / "disc")] if warm is not None else self.starts(method)[: 1 if probe else None]
        d, info = self.exp.train(sp, self.build(method, sp, **kw), cfg, starts, probe_iterations=self.s["probe"])
        return sp, d, info

    def best_rate(self, method: str, nfe: int, solver: str, afs: bool, **kw: Any):
        """`learned_run` at each of the method's learning rates (`rates`; else its one rate): the run with the lowest
        validation loss, its info carrying every rate's validation loss under "lr_choice"."""
        rates = self.s.get("rates", {}).get(method) or [None]
        if len(rates) == 1:
            return self.learned_run(method, nfe, solver, afs, lr=rates[0], **kw)
        sp, d, info, choice = best_rate(rates, lambda lr: self.learned_run(method, nfe, solver, afs, lr=lr, **kw))
        return sp, d, {**info, "lr_choice": choice}

    def choose_config(self, method: str, nfe: int, table: str) -> tuple[list[tuple[str, bool]], dict[str, float]]:
        """Configurations (solver, AFS) ranked by the validation loss of a short probe (one candidate: no probe)."""
        configs = configs_for(method, nfe, table)
        if len(configs) == 1:
            return configs, {}
        probes = {}
        for solver, afs in configs:
            _, _, info = self.learned_run(method, nfe, solver, afs, probe=True)
            probes[_key((solver, afs, None))] = info["best_val"]
        return sorted(configs, key=lambda c: probes[_key((*c, None))]), probes

    def learned_row(self, method: str, nfe: int, table: str) -> dict[str, Any]:
        """The best configuration of a learned global schedule (probe ranking, then full training)."""
        if method in SOLVER_METHODS:
            return self.solver_row(method, nfe, table)
        ranked, probes = self.choose_config(method, nfe, table)
        sp, d, info = self.best_rate(method, nfe, *ranked[0])
        choice = {"by": f"probe ({self.s['probe']} it) validation loss", "probes": probes}
        return self._row(sp, d, info, choice)

    def solver_row(self, method: str, nfe: int, table: str) -> dict[str, Any]:
        """AMED / EPD trained with their reference recipe in every configuration (solver family x base schedule);
        the lowest validation FD (or `--select`) wins, as for the fixed schedules. The winner is also trained over
        `LONG_PASSES` passes of the priors (the budget rule's question: does it keep improving?) and the longer run is
        kept if its validation score is lower."""
        sel, scored = self.s["select"], []
        for solver, afs in configs_for(method, nfe, table):
            for base in self.s.get("split_bases", SPLIT_BASES):
                sp, d, info = self.learned_run(method, nfe, solver, afs, base=base)
                scored.append((self.val_score(sp, d)[sel], sp, d, info))
        best = min(scored, key=lambda t: t[0])
        bsp = best[1]
        sp, d, info = self.learned_run(method, nfe, bsp["solver"], bsp["afs"], base=bsp["base"], passes=LONG_PASSES)
        longer = (self.val_score(sp, d)[sel], sp, d, info)
        _, sp, d, info = min([best, longer], key=lambda t: t[0])
        choice = {"by": f"validation {sel} of every configuration trained with the reference recipe (one pass), then "
                        f"the winner over {LONG_PASSES} passes if that is lower",
                  "candidates": {_key((c[1]["solver"], c[1]["afs"], c[1]["base"])): round(c[0], 5) for c in scored},
                  "passes": {"1": round(best[0], 5), str(LONG_PASSES): round(longer[0], 5)}}
        return self._row(sp, d, info, choice)

    def indis_row(self, nfe: int, table: str, rows: dict[str, Any], variant: str = "full") -> dict[str, Any]:
        """INDIS warm-started from the better trained global schedule (validation loss), under its configuration."""
        warm_name = min(("god", "ld3"), key=lambda m: rows[m]["train"]["best_val"])
        warm = rows[warm_name]
        sw = ABLATIONS[variant]
        net = {**self.s["phi"], **{k: v for k, v in sw.items() if k in PHI_SWITCHES}}
        flags = {k: v for k, v in sw.items() if k.startswith("learn_")}
        sp, d, info = self.best_rate("indis", nfe, warm["spec"]["solver"], warm["spec"]["afs"], warm=warm,
                                     variant=None if variant == "full" else variant, net=net, **flags)
        return self._row(sp, d, info, {"by": "the configuration of its warm start", "warm_start": warm_name})

    def table(self, nfe: int, table: str, only: set[str] | None = None) -> dict[str, Any]:
        """Every row of one table; with `only`, just those rows (and GOD and LD3 when INDIS is named: its warm start)."""
        rows: dict[str, Any] = {}
        wanted = None if only is None else set(only) | ({"god", "ld3"} if "indis" in only else set())
        for row in (r for r in ROWS if wanted is None or r in wanted):
            t0 = time.time()
            if row == "indis":
                rows[row] = self.indis_row(nfe, table, rows)
            else:
                rows[row] = (self.fixed_row if row in ("best-heuristic", "dmn", "gits") else self.learned_row)(row, nfe, table)
            self.log(f"seed {self.seed} NFE {nfe} {table}: {row} ({time.time() - t0:.0f} s)")
        return rows

    def oracle(self, nfe: int, rows: dict[str, Any]) -> dict[str, Any]:
        """Per-instance optimisation of INDIS's parameters on the first test priors, started from GOD under INDIS's
        configuration: the ceiling, with (GOD - INDIS) / (GOD - oracle) in teacher-MSE on the same priors."""
        from ..discretizations.base import InstanceOracle

        P = min(self.s["oracle_priors"], self.s["test"])
        ind = rows["indis"]
        solver, afs = ind["spec"]["solver"], ind["spec"]["afs"]
        gsp, god, _ = self.best_rate("god", nfe, solver, afs)
        sp = self.spec("oracle-of-god", nfe, solver, afs, priors=P, god=self.exp.run_dir(gsp).name,
                       oracle={k: self.s[k] for k in ("oracle_cap", "oracle_patience")} | {"lr": self.s["lr"]["oracle"]})
        cfg = TrainConfig(iterations=self.s["oracle_cap"], batch_size=P, lr=self.s["lr"]["oracle"], patience=self.s["oracle_patience"],
                          val_every=10, train_indices=list(range(P)), val_indices=list(range(P)), grad_clip=0.0, seed=self.seed,
                          loss=self.loss)
        d, info = self.exp.train(sp, lambda _: InstanceOracle.from_global(god, P), cfg, [None], teacher="test", val="test")
        recs = {"oracle": self.test_record(sp, d, limit=P), "god": self.test_record(gsp, god, limit=P),
                "indis": self.test_record(ind["spec"], self.exp.load(ind["spec"]), limit=P)}
        g, i, o = (recs[k]["mse"] for k in ("god", "indis", "oracle"))
        return {"priors": P, "records": recs, "train": info, "gap_closed": (g - i) / (g - o) if g > o else None,
                "specs": {"oracle": sp, "god": gsp, "indis": ind["spec"]}}

    # -- the rest of the report: teacher row, per-instance timesteps, sample grid, phi's overhead ------------------
    def teacher_record(self) -> dict[str, Any]:
        from ..metrics.features import frechet_distance

        x0, c = self.exp.data("test")[3], self.exp.data("test")[2]
        f = self.features(x0)
        r = {"fd": frechet_distance(f, self.real_all), "fd_heldout": frechet_distance(f, self.real_heldout),
             "fd_teacher": frechet_distance(f, self.teacher_features()), "steps": self.exp.cfg.teacher_steps}
        if self.cond:
            r["accuracy"] = float((self.extractor.predict(x0.float().cpu()) == c.cpu()).float().mean())
        return r

    def timesteps(self, nfe: int, rows: dict[str, Any], n: int = 64) -> dict[str, Any]:
        """phi's per-instance sigma_n for the first n test priors beside the global schedule it started from."""
        ind = rows["indis"]
        d = self.exp.load(ind["spec"])
        _, xT, c, _ = self.exp.data("test")
        with torch.no_grad():
            t = d(xT[:n], None if c is None else c[:n]).times.double()
            warm = self.exp.load(rows[ind["choice"]["warm_start"]]["spec"])
            g = warm(xT[:1]).times[0].double()
        sig = self.h.schedule.to_edm_sigma(t)
        return {"nfe": nfe, "sigma": sig.tolist(), "global_sigma": self.h.schedule.to_edm_sigma(g).tolist(),
                "global": ind["choice"]["warm_start"], "labels": None if c is None else c[:n].tolist(),
                "log_sigma_std": torch.log(sig[:, 1:-1]).std(0).tolist()}

    def grid(self, nfe: int, rows: dict[str, Any], oracle: dict[str, Any] | None, n: int = 8) -> dict[str, Any]:
        """The first n test priors under the teacher, EDM rho=7 (iPNDM), the baseline with the best validation score
        (chosen on validation like everything else, so it can differ from the table's strongest on test), INDIS and
        the oracle."""
        sp, d, _ = self.fixed("edm", nfe, "ipndm", False)
        out = {"teacher": self.exp.data("test")[3][:n], "edm": self.exp.samples(sp, d, "test")[:n]}
        base = min((r for r in rows if r != "indis"), key=lambda r: rows[r]["val"][self.s["select"]])
        out[f"best on validation ({base})"] = self.exp.samples(rows[base]["spec"], self.exp.load(rows[base]["spec"]), "test")[:n]
        out["indis"] = self.exp.samples(rows["indis"]["spec"], self.exp.load(rows["indis"]["spec"]), "test")[:n]
        if oracle is not None:
            sp = oracle["specs"]["oracle"]
            out["oracle"] = self.exp.samples(sp, self.exp.load(sp), "test", limit=oracle["priors"])[:n]
        return {"nfe": nfe, **{k: v.float().cpu().round(decimals=4).tolist() for k, v in out.items()}}  # for display

    def overhead(self, rows: dict[str, Any], batch: int = 256, repeats: int = 10) -> dict[str, Any]:
        """phi forward time / total sampling time (phi + solver) on one batch of priors, best of `repeats`."""
        d = self.exp.load(rows["indis"]["spec"])
        _, xT, c, _ = self.exp.data("test")
        xT, c = xT[:batch], None if c is None else c[:batch]
        tp, ts = [], []
        with torch.no_grad():
            d(xT, c), d.sample(self.h.denoiser, xT, c)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter(); d(xT, c); tp.append(time.perf_counter() - t0)  # noqa: E702
                t0 = time.perf_counter(); d.sample(self.h.denoiser, xT, c); ts.append(time.perf_counter() - t0)  # noqa: E702
        return {"nfe": rows["indis"]["spec"]["nfe"], "steps": d.steps, "batch": batch, "phi_s": min(tp), "sampling_s": min(ts),
                "overhead": min(tp) / min(ts), "phi_params": sum(p.numel() for p in d.phi.parameters()),
                "threads": torch.get_num_threads()}

    def run(self, nfes: list[int]) -> dict[str, Any]:
        """Every table of the protocol for this seed (cached: a rerun only redoes what is missing)."""
        s, res = self.s, {"seed": self.seed, "main": {}, "ipndm": {}, "oracle": {}, "ablations": {}}
        rank = s["seeds"].index(self.seed)  # the iPNDM-only table and the ablations run on the first seed(s) only
        # headline first: every main table, then oracles, ablations and the iPNDM-only table (partial runs stay useful)
        for nfe in nfes:
            res["main"][str(nfe)] = self.table(nfe, "main")
        for nfe in (n for n in nfes if n in s["oracle_nfes"]):
            res["oracle"][str(nfe)] = self.oracle(nfe, res["main"][str(nfe)])
        if rank < s.get("ablation_seeds", len(s["seeds"])):
            variants = [v for v in ABLATIONS if v != "no-class" or self.cond]
            for nfe in (n for n in nfes if n in s["ablation_nfes"]):
                rows = res["main"][str(nfe)]
                res["ablations"][str(nfe)] = {v: rows["indis"] if v == "full" else self.indis_row(nfe, "main", rows, v)
                                              for v in variants}
        for nfe in nfes:
            wanted = s["ipndm_table"] and rank < s.get("ipndm_seeds", 99) and nfe in s.get("ipndm_nfes", nfes)
            res["ipndm"][str(nfe)] = self.table(nfe, "ipndm") if wanted else None
        fig = min(nfes, key=lambda n: abs(n - 3))
        res["teacher"] = self.teacher_record()
        res["timesteps"] = self.timesteps(fig, res["main"][str(fig)])
        res["grid"] = self.grid(fig, res["main"][str(fig)], res["oracle"].get(str(fig)))
        if 5 in nfes:
            res["overhead"] = self.overhead(res["main"]["5"])
        return res
