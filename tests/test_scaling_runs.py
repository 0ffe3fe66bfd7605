"""Several training runs of a scaling cell (`indis.bench.scaling_runs`): training seeds, the pooled ratio and its
two-level interval against closed forms, the report's summary on hand-made cells; and the epoch shuffle's seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from indis.bench.scaling_report import _runs
from indis.bench.scaling_runs import pooled_ratio, runs_block, runs_summary
from indis.training.config import train_seed
from indis.errors import InputError
from indis.metrics.stats import ratio_ci
from indis.teacher import iter_batches


def test_train_seed_keeps_run_zero_and_hashes_the_others():
    assert [train_seed(s, 0) for s in (0, 1, 7)] == [0, 1, 7]  # run 0 is the cell's own training (its cache stays valid)
    seeds = {train_seed(s, r) for s in range(3) for r in range(1, 6)}
    assert len(seeds) == 15 and all(0 <= x < 2**63 for x in seeds)  # every (seed, run) its own
    assert train_seed(2, 3) == train_seed(2, 3) and train_seed(0, 1) != train_seed(1, 0)
    with pytest.raises(InputError, match="run"):
        train_seed(0, -1)


def test_pooled_ratio_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 1.5, (3, 40)), rng.uniform(0.5, 1.5, (3, 40))
    assert pooled_ratio(a, b)["ratio"] == pytest.approx(a.sum() / b.sum(), rel=1e-12)
    # errors constant over priors: only the runs vary, and with two runs the bootstrap takes three values, each run's
    # ratio alone (1/4 each) and their mediant (1/2): its 2.5% and 97.5% quantiles are the two runs' ratios
    a2, b2 = np.array([[1.0] * 5, [3.0] * 5]), np.array([[2.0] * 5, [2.0] * 5])
    assert pooled_ratio(a2, b2, replicates=400)["ratio_ci"] == pytest.approx([0.5, 1.5], abs=1e-12)
    # one run: a paired bootstrap over priors, as the grid's ratio_ci; two independent 95% percentile bootstraps
    # (2,000 and 1,000 draws) agree to a few hundredths of the interval's width, so 0.1 of the width is generous
    one = pooled_ratio(a[:1], b[:1])["ratio_ci"]
    ref = ratio_ci(a[0], b[0])
    width = ref[1] - ref[0]
    assert one == pytest.approx(ref, abs=0.1 * width)
    with pytest.raises(InputError, match="runs, priors"):
        pooled_ratio(a[0], b[0])


def test_runs_block_and_summary_by_hand():
    a = np.array([[1.0, 1.0], [2.0, 2.0]])
    blk = runs_block(a, np.ones((2, 2)), [False, True], predicted=1.4)
    assert blk["ratios"] == [1.0, 2.0] and blk["ratio"] == 1.5 and blk["kept_god"] == [False, True]
    assert blk["prediction_error"] == pytest.approx(-0.1) and blk["count"] == 2

    def cell(ratios, err_first, ci, says):
        pooled = float(np.mean(ratios))
        return {"prediction_error": err_first, "diagnosis": {"recommendation": says, "predicted_ratio": 0.5},
                "training_runs": {"count": len(ratios), "ratios": ratios, "ratio": pooled, "ratio_ci": ci,
                                  "prediction_error": 0.5 - pooled}}

    # the prediction is 0.5 in every cell; median runs 0.52, 0.95, 0.96
    cells = [cell([0.50, 0.52, 0.60], 0.0, [0.45, 0.62], "INDIS"),  # 1 of 3 pairs; pooled 0.54 (|err| 0.04), a gain
             cell([0.90, 1.00], 0.3, [0.98, 1.02], "INDIS"),  # 0 of 1 pair; pooled 0.95 (|err| 0.45), precise, level
             cell([0.96, 0.96], 0.0, [0.95, 0.97], "GOD"),  # a gain of 3-5% the recommendation missed
             {"prediction_error": 0.0}]  # no runs: left out
    s = _runs(cells)  # runs_summary at +-0.05, and the recommendation judged on the pooled intervals at 1 and 0.98
    assert s == {"cells": 3, "runs": [2, 3], "pairs": 5, "run0_retrained": 0, "pairs_within": 2, "first_within": 2, "pooled_within": 1,
                 "run_predictions": 7, "runs_within": 2,  # 0.5 is within 0.05 of 0.50 and 0.52 only
                 "pooled_precise": 2, "pooled_within_precise": 0, "median_within": 1, "pooled_gain": 2, "pooled_loss": 0,
                 "recommendation_right": ["1/2", "1/2"]}  # decided at 1 and at 0.98: the first and third cells
    cells[0]["training_runs"]["kept_god"] = [True, True, True]  # every run's INDIS is its GOD: a tie, not a gain
    assert runs_summary(cells, 0.05)["pooled_gain"] == 1
    cells[0]["training_runs"]["kept_god"] = [True, False, True]  # one run trained: the pooled interval counts
    assert runs_summary(cells, 0.05)["pooled_gain"] == 2
    cells[1]["training_runs"]["run0_is_result"] = False  # its runs were gone: run 0 retrained
    assert runs_summary(cells, 0.05)["run0_retrained"] == 1
    assert runs_summary([{"prediction_error": 0.0}], 0.05) is None and _runs([{"prediction_error": 0.0}]) is None


def test_epoch_shuffle_keeps_small_seeds_and_separates_large_ones():
    idx = torch.arange(50)
    order = lambda seed, epoch: torch.cat(list(iter_batches(idx, 50, seed, epoch)))  # noqa: E731
    legacy = torch.randperm(50, generator=torch.Generator().manual_seed(3 * 100_003 + 2))
    assert torch.equal(order(3, 2), legacy)  # small seeds keep the stream every committed run used
    big = 2**40
    assert not torch.equal(order(big, 0), order(big + 2**32, 0))  # torch keeps 32 bits of a seed: these are hashed
    assert not torch.equal(order(2**63 - 1, 0), order(2**63 - 1, 1))  # the largest seed TrainConfig takes: no overflow
