"""An EDM Heun sampler written independently of indis' solvers, for checking shipped models' samples."""
import torch


def edm_sigmas(n: int, smin: float = 0.002, smax: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    s = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(fn, x: torch.Tensor, cond, n: int) -> torch.Tensor:
    """EDM Heun sampler (Karras et al. 2022, alg. 1 without churn), written independently of indis' solvers."""
    s = edm_sigmas(n)
    for i in range(n):
        sc, sn = float(s[i]), float(s[i + 1])
        d = (x - fn(x, torch.full((x.shape[0],), sc), cond)) / sc
        xn = x + (sn - sc) * d
        if sn > 0:
            d2 = (xn - fn(xn, torch.full((x.shape[0],), sn), cond)) / sn
            xn = x + (sn - sc) * 0.5 * (d + d2)
        x = xn
    return x
