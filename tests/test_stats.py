"""Benchmark statistics against independent references: the weighted FD equals the Fréchet distance of explicitly
repeated rows (scipy's sqrtm formula), the one-pass bootstrap equals a naive per-pair bootstrap written out here, and
the paired interval has the width the normal theory predicts."""
import numpy as np
import pytest
from scipy import linalg

from indis.metrics.stats import (bootstrap_ci, fd_reference, paired_bootstrap, paired_bootstrap_many, t_interval,
                                 weighted_fd, weighted_mean)


def _fd_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """FD of two sample sets by the textbook formula ||mu1-mu2||^2 + tr(C1 + C2 - 2 sqrtm(C1 C2))."""
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))


def _data(seed: int, n: int = 60, d: int = 4, shift: float = 0.0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)) @ g.normal(size=(d, d)) + shift


def test_weighted_fd_equals_fd_of_repeated_rows():
    x, ref = _data(0), _data(1, n=80, shift=0.5)
    w = np.random.default_rng(2).multinomial(len(x), np.full(len(x), 1 / len(x))).astype(float)
    ref_fd = _fd_scipy(np.repeat(x, w.astype(int), axis=0), ref)
    # float64 throughout; sqrtm of C1 C2 vs two symmetric eigendecompositions agree to ~1e-12 relative on 4x4
    assert weighted_fd(x, w, ref) == pytest.approx(ref_fd, rel=1e-9)
    assert weighted_fd(x, w, fd_reference(ref)) == pytest.approx(ref_fd, rel=1e-9)
    assert weighted_fd(x, np.ones(len(x)), ref) == pytest.approx(_fd_scipy(x, ref), rel=1e-9)
    # the reference's square root passed in (decomposed once per replicate) or taken inside: the same FD
    from indis.metrics.stats import fd_from_moments

    mu, c, sq = fd_reference(ref)
    mx, cx, _ = fd_reference(x)
    assert fd_from_moments(mx, cx, mu, c) == pytest.approx(fd_from_moments(mx, cx, mu, c, sq), rel=1e-9)
    assert fd_from_moments(mx, cx, mu, c) == pytest.approx(_fd_scipy(x, ref), rel=1e-9)


def _naive_paired(a, b, ref, replicates, seed=0):
    """The bootstrap written with explicit row copies, one pair of methods at a time; seed s draws from its own
    stream (numpy's SeedSequence of [seed, s]), replicate after replicate."""
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, s])) for s in range(len(a))]
    reps = []
    for _ in range(replicates):
        diffs = []
        for rng, x, y, r in zip(rngs, a, b, ref):
            w = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x))).astype(int)
            rr = r[rng.integers(0, len(r), len(r))]
            diffs.append(_fd_scipy(np.repeat(x, w, axis=0), rr) - _fd_scipy(np.repeat(y, w, axis=0), rr))
        reps.append(np.mean(diffs))
    return np.percentile(reps, [2.5, 97.5])


def test_one_pass_bootstrap_equals_naive_per_pair_bootstrap():
    a = [_data(10), _data(11)]
    bs = {"b1": [_data(20, shift=0.2), _data(21, shift=0.2)], "b2": [_data(30, shift=1.0), _data(31, shift=1.0)]}
    ref = [_data(40, n=90), _data(41, n=90)]
    many = paired_bootstrap_many(weighted_fd, a, bs, ref, replicates=25, prepare=fd_reference)
    for k, b in bs.items():
        # the same draws in the same order: only float64 rounding of two FD formulas separates them
        np.testing.assert_allclose(many[k]["ci"], _naive_paired(a, b, ref, 25), rtol=1e-7, atol=1e-9)
        single = paired_bootstrap(weighted_fd, a, b, ref, replicates=25)
        np.testing.assert_allclose(many[k]["ci"], single["ci"], rtol=1e-9)
        assert many[k]["per_seed"] == pytest.approx([_fd_scipy(x, r) - _fd_scipy(y, r) for x, y, r in zip(a, b, ref)], rel=1e-7)
    assert many["b2"]["excludes_zero"] and many["b2"]["diff"] < many["b1"]["diff"]


def test_paired_interval_has_normal_theory_width():
    g = np.random.default_rng(5)
    z = g.normal(size=400)
    a, b = z, z + 0.3 + 0.1 * g.normal(size=400)  # paired: the shared z cancels, the difference has sd 0.1
    c = paired_bootstrap(weighted_mean, [a], [b], [None], replicates=400)
    t = t_interval(a - b)
    # 400 replicates estimate a 95% percentile interval's half-width to about +-10%; 30% leaves room for that
    assert c["diff"] == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    assert (c["ci"][1] - c["ci"][0]) / (t[1] - t[0]) == pytest.approx(1.0, abs=0.3)
    assert c["excludes_zero"] and c["ci"][0] < -0.3 < c["ci"][1]
    lo, hi = bootstrap_ci(weighted_mean, [a], [None], replicates=400)
    assert lo < float(a.mean()) < hi and (hi - lo) > 5 * (c["ci"][1] - c["ci"][0])  # unpaired: z's sd 1 vs 0.1


def test_bad_input_names_the_problem():
    from indis.errors import InputError

    with pytest.raises(InputError, match="different numbers of priors"):
        paired_bootstrap(weighted_mean, [np.ones(3)], [np.ones(4)], [None])
    with pytest.raises(InputError, match="same number"):
        paired_bootstrap_many(weighted_mean, [np.ones(3)], {"b": [np.ones(3), np.ones(3)]}, [None])


def test_ratio_ci_is_paired_and_exact_for_proportional_rows():
    """mean(a)/mean(b) with a = 2.5 b on every prior: every paired replicate is exactly 2.5 (only rounding, ~1e-15
    relative); unpaired noise of the same size gives a wide interval around the point ratio instead."""
    from indis.metrics.stats import ratio_ci

    rng = np.random.default_rng(3)
    b = rng.lognormal(size=400)
    lo, hi = ratio_ci(2.5 * b, b, replicates=200)
    assert abs(lo - 2.5) < 1e-12 and abs(hi - 2.5) < 1e-12
    a = 2.5 * rng.permutation(b)
    lo, hi = ratio_ci(a, b, replicates=200)
    assert lo < a.mean() / b.mean() < hi and hi - lo > 0.1


def test_pooled_interval_of_three_seeds_has_normal_theory_width():
    """Pooling per-seed replicates gives the interval of the mean over seeds of paired differences: normal theory says
    its standard error is sqrt(sum_s var_s / n_s) / S."""
    from indis.metrics.stats import pooled_interval, seed_replicates

    g = np.random.default_rng(8)
    ev, se2 = [], 0.0
    for s, n in enumerate((300, 400, 500)):
        z = g.normal(size=n)
        a, b = z, z + 0.2 + (0.1 + 0.05 * s) * g.normal(size=n)
        ev.append(seed_replicates(weighted_mean, {"a": a, "b": b}, None, np.random.default_rng([s, 1]), replicates=800))
        se2 += np.var(a - b, ddof=1) / n
    c = pooled_interval(ev, "a", "b")
    half = 1.96 * np.sqrt(se2) / 3
    # 800 replicates estimate a 95% percentile interval's half-width to about +-7%; 20% leaves room for that
    assert (c["ci"][1] - c["ci"][0]) / (2 * half) == pytest.approx(1.0, abs=0.2)
    assert c["diff"] == pytest.approx(np.mean([e["a"]["point"] - e["b"]["point"] for e in ev]), rel=1e-12)
    assert c["excludes_zero"] and c["all_seeds_agree"] and len(c["per_seed"]) == 3
    alone = pooled_interval(ev, "a")  # one method's own statistic: unpaired, z's sd 1 dominates
    assert alone["ci"][0] < alone["diff"] < alone["ci"][1] and alone["ci"][1] - alone["ci"][0] > 3 * (c["ci"][1] - c["ci"][0])
    from indis.errors import InputError
    with pytest.raises(InputError, match="replicates"):
        pooled_interval([ev[0], seed_replicates(weighted_mean, {"a": a, "b": b}, None, g, replicates=5)], "a", "b")


def test_seed_streams_differ_for_every_seed_and_index():
    from indis.metrics.stats import seed_stream

    draws = {(sd, s): tuple(seed_stream(sd, s).integers(0, 2**31, 4)) for sd in (0, 1, 2**40) for s in (0, 1, 2)}
    assert len(set(draws.values())) == len(draws)
    assert tuple(seed_stream(1, 2).integers(0, 2**31, 4)) == draws[(1, 2)]  # reproducible


def test_per_prior_view_by_hand():
    from indis.errors import InputError
    from indis.metrics.stats import per_prior_view

    # 99 priors where both methods err by 1 and one where the first errs by 1000: the mean ratio is 10.99, but the
    # pooled 99th percentile of the 200 errors is 1, so the winsorised ratio is 1; the median per-prior ratio is 1 in
    # every resample (at most 1 of 100 rows differs); the worst 1% (one prior) carries 1000/1099 of the first total
    a = np.ones(100)
    a[7] = 1000.0
    v = per_prior_view(a, np.ones(100), replicates=50)
    assert v["median_ratio"] == 1.0 and v["median_ratio_ci"] == [1.0, 1.0] and v["winsorized_ratio"] == 1.0
    assert v["tail_share"] == pytest.approx(1000 / 1099, rel=1e-12) and v["reference_tail_share"] == pytest.approx(0.01)
    half = per_prior_view(0.5 * np.arange(1.0, 11.0), np.arange(1.0, 11.0), replicates=20)
    assert half["median_ratio"] == pytest.approx(0.5) and half["median_ratio_ci"] == pytest.approx([0.5, 0.5])
    with pytest.raises(InputError, match="same length"):
        per_prior_view(np.ones(3), np.ones(4))
    with pytest.raises(InputError, match="non-negative"):
        per_prior_view(-np.ones(3), np.ones(3))
