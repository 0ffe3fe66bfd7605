"""What do INDIS's per-prior outputs depend on? For one finished cell of `indis bench scaling` (its cached runs are
reused, nothing is trained): 5-fold cross-validated R^2 of ridge regressions of each of phi's outputs on the test
priors (the inner times t_1..t_{N-1}, the shifts, the scales) on candidate features: |x_T|, x_T, the first denoised
estimate D(x_T, t_max), the teacher endpoint, and the condition.

    python benchmarks/studies/probe_phi.py OUT/cells/random-d64-K2-class-g4-nfe3-s0 [--quick]

(--quick: a cell of `indis bench scaling --quick`, whose settings differ; with other settings than the cell's, the
bench's cache would not match and the runs would be trained anew.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_score

from indis.bench import scaling as S


def main(folder: Path, quick: bool = False) -> None:
    c = json.loads((folder / "result.json").read_text())["cell"]
    s = dict(S.QUICK if quick else S.FULL)
    h = S.handle_for(c)
    exp = S._experiment(folder, h, c, s, False)
    (gsp, _), _ = S._god(exp, h, c, s)
    _, ind, _ = S._indis(exp, h, c, s, gsp)
    _, xT, cond, x0 = exp.data("test")
    with torch.no_grad():
        st = ind(xT, cond)
        t = torch.full((len(xT),), float(st.times[0, 0]), dtype=xT.dtype)
        den = h.denoiser(xT, t, cond)[0].reshape(len(xT), -1).numpy()
    out = torch.cat([st.times[:, 1:-1], st.shift, st.scale], 1).numpy()
    names = ([f"t{i}" for i in range(1, st.times.shape[1] - 1)] + [f"shift{i}" for i in range(st.shift.shape[1])]
             + [f"scale{i}" for i in range(st.scale.shape[1])])
    X, E = xT.reshape(len(xT), -1).numpy(), x0.reshape(len(x0), -1).numpy()
    feats = {"|x_T|": np.linalg.norm(X, axis=1, keepdims=True), "x_T": X, "D(x_T, t_max)": den, "teacher x_0": E}
    if isinstance(cond, torch.Tensor):
        C = cond.reshape(len(cond), -1).numpy()
        feats["condition"] = C if C.shape[1] > 1 else np.eye(int(C.max()) + 1)[C[:, 0].astype(int)]
    print(f"{c}: std over test priors of " + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, out.std(0))))
    print("| feature | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k, F in feats.items():
        r2 = [np.mean(cross_val_score(RidgeCV(alphas=np.logspace(-4, 3, 15)), F, out[:, j], cv=5, scoring="r2"))
              for j in range(out.shape[1])]
        print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in r2) + " |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), "--quick" in sys.argv[2:])
