"""The diagnostic's learning-curve prediction (`indis.diagnose`, step 6): the bench's protocol on subsets of a teacher
set. GOD is fitted from its starts at GLOBAL_LRS and polished, phi is trained on nested subsets of CURVE_SIZES priors
warm-started from it, and phi / GOD on a scored block is extrapolated as r_inf + a / n to the training-set size."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .errors import InputError
from .losses import mse
from .metrics.stats import tail_share

Device = str | torch.device
GLOBAL_LRS = (5e-2, 5e-3, 5e-4)  # learning rates of the global fit (the best on its priors is kept)
#: the global fit probes GOD's starts (logSNR, EDM, DMN), each for PROBE iterations (at most a sixth of the fit's cap)
GLOBAL_STARTS, PROBE = 3, 50
CURVE_SIZES = (500, 1000)  # the learning-curve prediction trains phi on this many priors of the teacher set
CURVE_LRS = (1e-3, 1e-4)  # INDIS's learning rates in `indis bench scaling`, chosen on the validation block
CURVE_SCORE, CURVE_MIN, CURVE_CAP = 300, 100, 3000  # validation block (and least scored), smallest set, iteration cap
CURVE_SCORE_MAX = 2000  # the scored block takes the priors left after the fits and validation, up to this many
STALLED = 1e-3  # phi within this share of the shared schedule on every subset: it did not learn there


def stalled(curve: dict[str, Any] | None) -> bool:
    """Whether phi stayed at its GOD warm start (ratio within STALLED of 1) on every subset of a learning curve
    (`curve_ratio`'s result): its prediction 1 then says that no gain was seen on up to max(sizes) priors, not that
    none exists, and its interval (scoring noise of that one result) cannot say more."""
    return bool(curve) and min(curve["at_sizes"]) >= 1 - STALLED


def curve_rows(total: int, sizes: Sequence[int] = CURVE_SIZES) -> tuple[list[list[int]], list[int], list[int]] | None:
    """Rows of a teacher set of `total` priors for the learning-curve prediction: nested fit sets (the first n of the
    set for each n of `sizes`, shrunk in proportion when the set is small), a validation block after them and a
    scored block of every prior left (up to CURVE_SCORE_MAX: per-prior errors can be heavy-tailed); None below
    CURVE_MIN priors."""
    if total < CURVE_MIN:
        return None
    score = val = min(CURVE_SCORE, total // 5)
    room = total - score - val
    big = min(max(sizes), room)
    ns = sorted({max(8, round(n * big / max(sizes))) for n in sizes})
    fits = [list(range(n)) for n in ns]
    end = min(total, big + val + max(score, CURVE_SCORE_MAX))
    return fits, list(range(big, big + val)), list(range(big + val, end))


def extrapolate(ratios: Sequence[float], sizes: Sequence[int], train_size: int) -> float:
    """r(train_size) from r(n) = r_inf + a / n through the ratios at the smallest and largest of `sizes` (one size:
    its ratio), kept in [0, 1] (INDIS keeps its warm start unless validation improves on it; a steep curve can
    extrapolate below 0)."""
    r, n = [float(v) for v in ratios], [float(v) for v in sizes]
    if len(r) != len(n) or not r or any(v <= 0 for v in n) or train_size < 1:
        raise InputError(f"extrapolate needs one ratio per positive size and train_size >= 1, got {ratios}, {sizes}, "
                         f"{train_size}")
    if len(r) == 1 or n[0] == n[-1]:
        return min(1.0, max(0.0, r[-1]))
    a = (r[0] - r[-1]) / (1 / n[0] - 1 / n[-1])
    return min(1.0, max(0.0, r[-1] + a * (1 / train_size - 1 / n[-1])))


def _curve_config(rows: list[int], val: list[int], lr: float, seed: int, iterations: int) -> Any:
    """The bench's budget rule (batch 64, validation every 25 iterations, patience 6) on `rows`, validated on `val`."""
    from .training import TrainConfig

    torch.manual_seed(seed)
    return TrainConfig(iterations=iterations, batch_size=min(64, len(rows)), lr=lr, val_every=25, patience=6,
                       train_indices=rows, val_indices=val, seed=seed)


def _fit_from(disc: Any, handle: Any, teacher: Any, rows: list[int], val: list[int], lr: float, seed: int,
              iterations: int, device: Device = "cpu") -> tuple[float, Any]:
    from .training import train_discretizer

    cfg = _curve_config(rows, val, lr, seed, iterations)
    r = train_discretizer(disc, handle.denoiser, teacher, cfg, progress=False, dtype=torch.float64, device=device)
    return r.best_val, disc


def _best_global(handle: Any, teacher: Any, steps: int, config: Any, seed: int, probe: int,
                 dtype: torch.dtype = torch.float32, solver: str = "ipndm", afs: bool = False,
                 device: Device = "cpu") -> tuple[float, Any]:
    """GOD's fit under (`solver`, `afs`): its starts (logSNR, EDM, DMN) probed for `probe` iterations and the best
    trained under `config(lr)` at each of GLOBAL_LRS; (the lowest validation loss, that schedule)."""
    from .methods import global_starts, learned
    from .training import train_with_starts

    fits = []
    for lr in GLOBAL_LRS:  # a sharp start (tiny errors) leaves its basin at the largest rate: keep the best fit
        torch.manual_seed(seed)
        # GOD's own starts (logSNR, EDM, DMN probed): from logSNR alone the fit can sit 20x above GOD
        g, r = train_with_starts(lambda init: learned(handle, "god", steps, solver, afs=afs, init=init),
                                 global_starts(handle, GLOBAL_STARTS, first="logsnr"), handle.denoiser, teacher,
                                 config(lr), probe_iterations=probe, progress=False, dtype=dtype, device=device)
        fits.append((r.best_val, g))
    return min(fits, key=lambda f: f[0])


def _curve_global(handle: Any, teacher: Any, god: Any, rows: list[int], val: list[int], seed: int,
                  iterations: int, device: Device = "cpu") -> Any:
    """GOD as `indis bench scaling` trains it, on `rows`, with the steps, solver and AFS of `god`: `_best_global`
    under the bench's budget rule, validated on `val`, then polished at CURVE_LRS; the better of the two on `val`
    (phi's warm start and the reference)."""
    import copy

    v0, fit = _best_global(handle, teacher, god.steps, lambda lr: _curve_config(rows, val, lr, seed, iterations), seed,
                           PROBE, torch.float64, god.solver, god.afs, device)
    polished = [_fit_from(copy.deepcopy(fit).train(), handle, teacher, rows, val, lr, seed, iterations, device)
                for lr in CURVE_LRS]
    v1, pol = min(polished, key=lambda r: r[0])
    return (pol if v1 < v0 else fit).eval()


def curve_ratio(handle: Any, teacher: Any, god: Any, train_size: int, *, seed: int = 0, iterations: int = CURVE_CAP,
                replicates: int = 1000, sizes: Sequence[int] = CURVE_SIZES,
                device: Device = "cpu") -> dict[str, Any] | None:
    """The learning-curve prediction, `indis bench scaling`'s protocol on subsets: GOD trained on the largest subset
    and polished (`_curve_global`; `god` gives only N), phi (INDIS's own network, warm-started from that GOD, INDIS's
    learning rates and budget rule) trained on each nested subset of n priors; on the scored block r(n) = phi_n /
    GOD, and r(n) = r_inf + a / n through the two subsets gives INDIS / GOD at `train_size` priors (in [0, 1]: INDIS
    keeps its warm start unless validation improves on it), with a paired bootstrap interval over the scored priors, and
    GOD's tail there (`god_tail_share`: the share of its teacher-MSE its worst 1% of scored priors carry). None when
    the teacher set is too small (`curve_rows`)."""
    from .methods import learned

    split = curve_rows(teacher.num_samples, sizes)
    if split is None:
        return None
    fits, val, score = split
    _, xs, cs, x0s = teacher.batch(torch.tensor(score), torch.float64, device)

    def scored(d: Any) -> np.ndarray:
        with torch.no_grad():
            return mse(d.eval().sample(handle.denoiser, xs, cs), x0s).cpu().numpy()

    start = shared = _curve_global(handle, teacher, god, fits[-1], val, seed, iterations, device)
    ref = scored(shared)
    per = []
    for rows in fits:
        def phi() -> Any:
            return learned(handle, "indis", start.steps, start.solver, afs=start.afs, space=start.space,
                           free_last=start.free_last, seed=seed).to(device).warm_start(start)
        per.append(scored(min((_fit_from(phi(), handle, teacher, rows, val, lr, seed, iterations, device)
                               for lr in CURVE_LRS), key=lambda r: r[0])[1]))
    n = [len(f) for f in fits]

    def at(i: np.ndarray) -> float:
        return extrapolate([p[i].mean() / ref[i].mean() for p in per], n, train_size)

    rng = np.random.default_rng(seed)
    reps = [at(rng.integers(0, len(ref), len(ref))) for _ in range(replicates)]
    return {"ratio": at(np.arange(len(ref))), "ci": [float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))],
            "sizes": [int(v) for v in n], "at_sizes": [float(p.mean() / ref.mean()) for p in per],
            "god_tail_share": tail_share(ref),
            "scored": len(score), "train_size": int(train_size)}
