"""Uncertainty of benchmark figures: paired bootstrap confidence intervals for differences between two methods
evaluated on the same priors (pooled over seeds), and mean +- std over seeds."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["mean_std", "ratio_ci", "per_prior_view", "paired_bootstrap", "paired_bootstrap_many", "bootstrap_ci", "seed_stream", "fd_from_moments", "fd_reference", "weighted_fd", "weighted_mean", "t_interval",
           "seed_replicates", "pooled_interval"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN-free inputs only."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        raise InputError(f"mean_std needs finite values, got {list(values)}")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def ratio_ci(a: np.ndarray, b: np.ndarray, *, replicates: int = 1000, seed: int = 0) -> list[float]:
    """95% paired bootstrap (percentile) interval of mean(a) / mean(b), resampling the priors (rows) of both at once."""
    rng = np.random.default_rng(seed)
    n = len(a)
    reps = []
    for _ in range(replicates):
        i = rng.integers(0, n, n)
        reps.append(a[i].mean() / b[i].mean())
    return [float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))]


def per_prior_view(a: np.ndarray, b: np.ndarray, *, tail: float = 0.01, replicates: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """How the ratio of mean errors mean(a) / mean(b) (same priors, per-prior errors >= 0) comes about prior by prior:
    the median per-prior ratio a/b with a 95% bootstrap interval, the ratio after winsorising both at the pooled
    (1 - tail) quantile (a few catastrophic priors no longer decide it), and the share of each total that its worst
    `tail` of priors carry."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise InputError(f"per_prior_view needs two 1-D arrays of the same length >= 2, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or (a < 0).any() or (b < 0).any():
        raise InputError("per_prior_view needs finite, non-negative per-prior errors")
    r = a / np.maximum(b, np.finfo(np.float64).tiny)
    rng = np.random.default_rng(seed)
    meds = [np.median(r[rng.integers(0, r.size, r.size)]) for _ in range(replicates)]
    cap = np.quantile(np.concatenate([a, b]), 1.0 - tail)
    return {"median_ratio": float(np.median(r)),
            "median_ratio_ci": [float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))],
            "winsorized_ratio": float(np.minimum(a, cap).mean() / np.minimum(b, cap).mean()),
            "tail": tail, "tail_share": tail_share(a, tail), "reference_tail_share": tail_share(b, tail)}


def tail_share(x: np.ndarray, tail: float = 0.01) -> float:
    """The share of sum(x) carried by its round(tail * n) largest values (at least one; 0 where the sum is not
    positive; above 1 where the others are negative, e.g. changes of error that fell elsewhere)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    k = max(1, int(round(tail * x.size)))
    return float(np.sort(x)[-k:].sum() / x.sum()) if x.sum() > 0 else 0.0


def _draw(rng: np.random.Generator, x: np.ndarray, ref: np.ndarray | None, prep: Callable[[np.ndarray], Any]):
    """One bootstrap replicate of a seed: multiplicities of x's rows, and the resampled, prepared reference."""
    w = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x))).astype(np.float64)
    return w, None if ref is None else prep(ref[rng.integers(0, len(ref), len(ref))])


def paired_bootstrap(stat: Callable[[np.ndarray, np.ndarray, Any], float], a: Sequence[np.ndarray],
                     b: Sequence[np.ndarray], ref: Sequence[np.ndarray | None], *, replicates: int = 200, level: float = 0.95,
                     seed: int = 0, prepare: Callable[[np.ndarray], Any] | None = None) -> dict[str, object]:
    """Confidence interval of mean_s [stat(a_s, ref_s) - stat(b_s, ref_s)] over seeds s.

    a[s] and b[s] hold per-prior rows (features or per-sample losses) of two methods on the SAME priors of seed s,
    so each replicate resamples those rows once for both methods (paired), and resamples the reference rows ref[s]
    (shared by both methods; None for statistics without a reference). `stat(rows, weights, ref)` evaluates the
    statistic; rows are passed with bootstrap multiplicities as `weights` (no copies); `prepare` turns a (resampled)
    reference into what `stat` takes, once per replicate (e.g. `fd_reference`). Percentile interval."""
    return paired_bootstrap_many(stat, a, {"b": b}, ref, replicates=replicates, level=level, seed=seed, prepare=prepare)["b"]


def seed_stream(seed: int, s: int) -> np.random.Generator:
    """The bootstrap stream of seed index `s` of a pooled interval drawn with `seed` (hashed: every pair differs)."""
    return np.random.default_rng(np.random.SeedSequence([seed, s]))


def paired_bootstrap_many(stat: Callable[[np.ndarray, np.ndarray, Any], float], a: Sequence[np.ndarray],
                          bs: dict[str, Sequence[np.ndarray]], ref: Sequence[np.ndarray | None], *, replicates: int = 200,
                          level: float = 0.95, seed: int = 0, prepare: Callable[[np.ndarray], Any] | None = None
                          ) -> dict[str, dict[str, object]]:
    """`paired_bootstrap(stat, a, b, ref)` for every b in `bs` at once, with the same replicate draws as separate calls
    (same seed): each seed's evidence (`seed_replicates`, its own stream `seed_stream(seed, s)`) pooled by
    `pooled_interval`, so a's statistic and the prepared reference are computed once per replicate for all b."""
    if not bs or any(not (len(a) == len(b) == len(ref)) for b in bs.values()) or not a:
        raise InputError("paired_bootstrap needs the same number (>= 1) of seeds for a, b and ref")
    for name, b in bs.items():
        for s, (x, y) in enumerate(zip(a, b)):
            if len(x) != len(y):
                raise InputError(f"seed {s}: the two methods ({name}) were evaluated on different numbers of priors "
                                 f"({len(x)} vs {len(y)})")
    if "a" in bs:
        raise InputError("paired_bootstrap_many: name the compared methods anything but 'a'")
    ev = [seed_replicates(stat, {"a": x, **{k: b[s] for k, b in bs.items()}}, r, seed_stream(seed, s),
                          replicates=replicates, prepare=prepare) for s, (x, r) in enumerate(zip(a, ref))]
    return {k: pooled_interval(ev, "a", k, level) for k in bs}


def bootstrap_ci(stat: Callable[[np.ndarray, np.ndarray, Any], float], a: Sequence[np.ndarray],
                 ref: Sequence[np.ndarray | None], *, replicates: int = 200, level: float = 0.95, seed: int = 0,
                 prepare: Callable[[np.ndarray], Any] | None = None) -> list[float]:
    """Percentile interval of mean_s stat(a_s, ref_s) over seeds, resampling the rows of a_s and ref_s."""
    ev = [seed_replicates(stat, {"a": x}, r, seed_stream(seed, s), replicates=replicates, prepare=prepare)
          for s, (x, r) in enumerate(zip(a, ref))]
    return pooled_interval(ev, "a", None, level)["ci"]


def seed_replicates(stat: Callable[[np.ndarray, np.ndarray, Any], float], rows: dict[str, np.ndarray],
                    ref: np.ndarray | None, rng: np.random.Generator, *, replicates: int = 200,
                    prepare: Callable[[np.ndarray], Any] | None = None) -> dict[str, dict[str, Any]]:
    """One seed's bootstrap evidence: `stat` of every method on all its test priors ("point") and on `replicates`
    resamplings of them ("reps"), the same resampling for every method, so any two methods are paired.

    `rows[name]` holds per-prior rows of method `name`, all on the same priors; `ref` is the shared reference (resampled
    too, None for statistics without one). Pooled over seeds by `pooled_interval`: kept per seed, the evidence of seeds
    run apart (other sessions, other machines) pools exactly as `paired_bootstrap_many` pools seeds run together."""
    if not rows or len({len(x) for x in rows.values()}) != 1:
        raise InputError(f"seed_replicates needs >= 1 method, all on the same priors; got sizes "
                         f"{ {k: len(x) for k, x in rows.items()} }")
    prep = prepare or (lambda r: r)
    full = None if ref is None else prep(ref)
    first = next(iter(rows.values()))
    out = {k: {"point": stat(x, np.ones(len(first)), full), "reps": np.empty(replicates)} for k, x in rows.items()}
    for i in range(replicates):
        w, rr = _draw(rng, first, ref, prep)
        for k, x in rows.items():
            out[k]["reps"][i] = stat(x, w, rr)
    return {k: {"point": float(v["point"]), "reps": [float(r) for r in v["reps"]]} for k, v in out.items()}


def pooled_interval(seeds: Sequence[dict[str, dict[str, Any]]], a: str, b: str | None = None,
                    level: float = 0.95) -> dict[str, Any]:
    """Mean over seeds of stat(a) - stat(b) (or of stat(a) alone when b is None) with its percentile interval, from
    `seed_replicates` evidence: replicate r of the pooled value is the mean of the seeds' replicates r (seeds are
    resampled independently, as in `paired_bootstrap_many`)."""
    if not seeds:
        raise InputError("pooled_interval needs the evidence of >= 1 seed")
    lens = {len(e[k]["reps"]) for e in seeds for k in (a, b) if k is not None}
    if len(lens) != 1:
        raise InputError(f"pooled_interval: the seeds hold different numbers of bootstrap replicates {sorted(lens)}; "
                         "rerun them with the same --replicates")
    point = [e[a]["point"] - (0.0 if b is None else e[b]["point"]) for e in seeds]
    reps = np.mean([np.asarray(e[a]["reps"]) - (0.0 if b is None else np.asarray(e[b]["reps"])) for e in seeds], axis=0)
    lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
    d = float(np.mean(point))
    return {"diff": d, "ci": [float(lo), float(hi)], "per_seed": [float(p) for p in point], "replicates": len(reps),
            "level": level, "excludes_zero": bool(lo > 0 or hi < 0),
            "all_seeds_agree": bool(all(np.sign(p) == np.sign(d) for p in point))}


def _weighted_moments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = w > 0  # about 37% of the rows of a bootstrap replicate are not drawn
    x, w = x[keep], w[keep]
    n = w.sum()
    mu = (w[:, None] * x).sum(0) / n
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc / (n - 1)
    return mu, cov


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance (negative round-off eigenvalues clipped)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def fd_from_moments(mu_a: np.ndarray, ca: np.ndarray, mu_b: np.ndarray, cb: np.ndarray,
                    sqrt_b: np.ndarray | None = None) -> float:
    """Fréchet distance between two Gaussians (symmetric eigendecompositions; `frechet_distance` of feature sets calls
    it): tr sqrt(ca cb) is the sum of the square roots of the eigenvalues of s ca s with s = sqrt(cb) (`sqrt_b`, when
    the caller has it: a reference scored against many feature sets is decomposed once, otherwise here)."""
    sb = _psd_sqrt(cb) if sqrt_b is None else sqrt_b
    m = sb @ ca @ sb
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    return max(float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * cross), 0.0)


def fd_reference(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, covariance and the covariance's square root of a reference feature set, for `weighted_fd` (the `prepare`
    of the bootstraps: decomposed once per replicate, not once per method)."""
    mu, c = _weighted_moments(np.asarray(ref, dtype=np.float64), np.ones(len(ref)))
    return mu, c, _psd_sqrt(c)


def weighted_fd(rows: np.ndarray, w: np.ndarray, ref: np.ndarray | tuple[np.ndarray, ...]) -> float:
    """FD between weighted rows (bootstrap multiplicities) and a reference feature set (or its `fd_reference`)."""
    mu_a, ca = _weighted_moments(rows, w)
    mu_b, cb, sb = ref if isinstance(ref, tuple) else fd_reference(ref)
    return fd_from_moments(mu_a, ca, mu_b, cb, sb)


def weighted_mean(rows: np.ndarray, w: np.ndarray, ref: object = None) -> float:
    """Weighted mean of per-sample values (e.g. teacher-MSE per prior)."""
    return float((rows * w).sum() / w.sum())


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean over seeds (None for fewer than 2 values)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size < 2:
        return None
    from scipy.stats import t

    h = t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return [float(v.mean() - h), float(v.mean() + h)]
