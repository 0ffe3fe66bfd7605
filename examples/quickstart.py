"""Quickstart: few-step sampling of the shipped digits model with a heuristic, a global and an INDIS schedule.

    python examples/quickstart.py

Generates a small 30-step iPNDM teacher set, trains GOD (one global schedule) and INDIS (phi(x_T, c)) for
NFE 3 with early stopping on validation priors, and compares their error to the teacher on held-out priors that
neither training nor validation saw. (The measured wall time is in the README.)
"""
import tempfile

import torch

import indis
from indis.losses import mse
from indis.methods import fixed, learned
from indis.priors import CondSpec
from indis.training import evaluate_loss

torch.manual_seed(0)
model = indis.load_model("zoo:digits-cond")  # EDM x0-denoiser on 8x8 digits, 10 classes
work = tempfile.mkdtemp(prefix="indis-quickstart-")

teacher = indis.generate_teacher(model.denoiser, f"{work}/teacher", model.data_shape, 1200, shard_size=600,
                                 cond=CondSpec("class", num_classes=10))
# disjoint priors: 900 to train on, 100 to choose the checkpoint (validation), 200 held out for the comparison
train, val, held_out = list(range(900)), list(range(900, 1000)), torch.arange(1000, 1200)
cfg = dict(batch_size=64, train_indices=train, val_indices=val, val_every=25, patience=6)

N = 3
edm = fixed(model, "edm", N)
god = learned(model, "god", N, init="logsnr")
indis.train_discretizer(god, model.denoiser, teacher, indis.TrainConfig(iterations=600, lr=5e-2, **cfg), out_dir=f"{work}/god")
phi = learned(model, "indis", N, init=f"{work}/god/best")  # warm start from the trained global schedule
indis.train_discretizer(phi, model.denoiser, teacher, indis.TrainConfig(iterations=600, lr=1e-3, **cfg), out_dir=f"{work}/indis")

for name, d in [("EDM rho=7", edm), ("GOD", god), ("INDIS", phi)]:
    print(f"{name:10s} NFE {N}: MSE to the 30-step teacher on held-out priors = {evaluate_loss(d, model.denoiser, teacher, held_out, mse):.5f}")

# sampling with the trained phi: per-sample times, shift and scale come from phi(x_T, c)
x_T = teacher.x_T(held_out[:4])
labels = torch.tensor([3, 1, 4, 1])
steps = phi(x_T, labels)
print("per-sample times:\n", steps.times.detach())
x0 = phi.sample(model.denoiser, x_T, labels)
print("samples:", tuple(x0.shape), f"(saved in {work})")
