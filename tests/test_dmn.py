"""DMN: the error-bound objective against a hand transcription of the notes, and the optimised schedules."""
import math

import numpy as np
import pytest
import torch

import indis
from indis.discretizations.dmn import dmn, dmn_objective
from indis.discretizations.heuristics import heuristic

DT = torch.float64


def lam_ends(s):
    return (float(s.lambda_(torch.tensor(s.t_max, dtype=DT))), float(s.lambda_(torch.tensor(s.t_min, dtype=DT))))


def H0(h):
    return math.exp(h) - 1


def H1(h):
    return h * math.exp(h) - H0(h)


def H2(h):
    return h * h * math.exp(h) - 2 * H1(h)


def weights(lam, kind):
    a = [1 / math.sqrt(1 + math.exp(-2 * l)) for l in lam]
    s = [1 / math.sqrt(1 + math.exp(2 * l)) for l in lam]
    return [s[n] ** 2 / a[n] if kind == "sigma2_over_alpha" else s[n] / a[n] for n in range(len(lam))]


def manual_n3(l1, l2, lT, le, trunc, kind):
    """N = 3: order 1 at s=0, order 2 at s=1 (n=0), order 1 at s=2."""
    lam = [lT, l1, l2, le]
    E = [math.exp(l) for l in lam]
    h0, h1 = l1 - lT, l2 - l1
    w = weights(lam, kind)
    first = abs((E[1] - E[0]) * w[0])
    last = abs((E[3] - E[2]) * w[2])
    J0 = -E[1] * H1(h1) / h0
    J1 = E[1] * (H1(h1) + h0 * H0(h1)) / h0
    if trunc > 1:
        return first + last + math.sqrt((w[0] * J0) ** 2 + (w[1] * J1) ** 2)
    return first + last + abs(w[0] * J0) + abs(w[1] * J1)


def manual_n5_trunc3(lams, lT, le, kind):
    """N = 5, trunc 3: s=0 order 1; s=1 order 2 and s=2 order 3 as root-sum-squares; s=3 order 2 accumulated; s=4 order 1."""
    lam = [lT, *lams, le]
    E = [math.exp(l) for l in lam]
    h = [lam[i + 1] - lam[i] for i in range(5)]
    w = weights(lam, kind)
    out = abs((E[1] - E[0]) * w[0]) + abs((E[5] - E[4]) * w[4])
    # s=1: n=0
    a0 = -E[1] * H1(h[1]) / h[0]
    a1 = E[1] * (H1(h[1]) + h[0] * H0(h[1])) / h[0]
    out += math.sqrt((w[0] * a0) ** 2 + (w[1] * a1) ** 2)
    # s=2: order 3, n=0
    b0 = E[2] * (H2(h[2]) + h[1] * H1(h[2])) / (h[0] * (h[0] + h[1]))
    b1 = -E[2] * (H2(h[2]) + (h[0] + h[1]) * H1(h[2])) / (h[0] * h[1])
    b2 = E[2] * (H2(h[2]) + (2 * h[1] + h[0]) * H1(h[2]) + h[1] * (h[0] + h[1]) * H0(h[2])) / (h[1] * (h[0] + h[1]))
    out += math.sqrt((w[0] * b0) ** 2 + (w[1] * b1) ** 2 + (w[2] * b2) ** 2)
    # s=3: order 2, n=2, signed contributions to evaluations 2 and 3
    c2 = w[2] * (-E[3] * H1(h[3]) / h[2])
    c3 = w[3] * (E[3] * (H1(h[3]) + h[2] * H0(h[3])) / h[2])
    return out + abs(c2) + abs(c3)


@pytest.mark.parametrize("kind", ["sigma2_over_alpha", "sigma_over_alpha"])
def test_objective_matches_transcription(kind):
    lT, le = lam_ends(indis.EDM())
    for l1, l2 in [(-1.0, 2.5), (0.3, 0.9), (-4.0, 6.0)]:
        for trunc in (3, 0):
            got = dmn_objective(np.array([l1, l2]), lT, le, trunc, kind)
            assert got == pytest.approx(manual_n3(l1, l2, lT, le, trunc, kind), rel=1e-12)
    lams = [-2.5, -0.7, 1.1, 3.9]
    assert dmn_objective(np.array(lams), lT, le, 3, kind) == pytest.approx(manual_n5_trunc3(lams, lT, le, kind), rel=1e-12)


@pytest.mark.parametrize("sname", ["edm", "vp"])
def test_schedules_monotone_and_improved(sname):
    s = {"edm": indis.EDM(), "vp": indis.VP()}[sname]
    lT, le = lam_ends(s)
    for N in range(3, 11):
        init = "unif" if sname == "edm" else "unif_t"
        t = dmn(N, s, init=init)
        assert t.dtype == DT and t.shape == (N + 1,)
        assert float(t[0]) == s.t_max and float(t[-1]) == s.t_min
        assert bool((t[1:] < t[:-1]).all())
        trunc = 3 if N <= 7 else 0
        t0 = dmn(N, s, init=init, optimize=False)
        obj = lambda tt: dmn_objective(s.lambda_(tt)[1:-1].numpy(), lT, le, trunc)  # noqa: E731
        assert obj(t) < obj(t0)


def test_inits_and_options():
    s = indis.EDM()
    torch.testing.assert_close(dmn(5, s, init="unif", optimize=False), heuristic("logsnr", 5, s))
    torch.testing.assert_close(dmn(5, s, init="unif_t", optimize=False), heuristic("uniform", 5, s))
    torch.testing.assert_close(dmn(5, s, init="edm", optimize=False), heuristic("edm", 5, s))
    torch.testing.assert_close(dmn(5, s, init="quad", optimize=False), heuristic("quadratic", 5, s))
    for init in ("edm", "quad"):
        t = dmn(4, s, init=init, weight="sigma_over_alpha")
        assert bool((t[1:] < t[:-1]).all())
    assert dmn(1, s).tolist() == [80.0, 0.002]
    fm = indis.FlowMatching()
    t = dmn(4, fm, trunc_num=0)
    assert float(t[0]) == fm.t_max and float(t[-1]) == fm.t_min and bool((t[1:] < t[:-1]).all())


def test_errors():
    with pytest.raises(indis.InputError, match="unif, unif_t, edm, quad"):
        dmn(4, indis.EDM(), init="logsnr")
    with pytest.raises(indis.InputError, match="sigma2_over_alpha, sigma_over_alpha"):
        dmn(4, indis.EDM(), weight="one")
    with pytest.raises(indis.InputError, match="steps"):
        dmn(0, indis.EDM())
    with pytest.raises(indis.InputError, match="log-SNR"):
        dmn(4, indis.FlowMatching(1.0, 0.0))
