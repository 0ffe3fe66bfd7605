"""phi's designs trained beside INDIS in every cell of `indis bench scaling`, from the same GOD: their names, what phi
reads, and phi's options at a data dimension (shared by the bench and its report)."""
from __future__ import annotations

from typing import Any

from ..discretizations.prior_net import BASIS_K, design_net

#: result key -> (name, what phi reads)
VARIANTS = {"denoised_input": ("INDIS-D", "D(x_T, t_max) as well"),
            "projected_input": ("INDIS-P", f"x_T projected on the top {BASIS_K} (d if fewer) principal directions of "
                                "the training endpoints"),
            "projected_denoised": ("INDIS-PD", "x_T and D(x_T, t_max), both projected on those directions")}


def variant_net(key: str, d: int) -> dict[str, Any]:
    """phi's options of the variant `key` (one of VARIANTS) at data dimension d."""
    return design_net(VARIANTS[key][0].lower(), d)
