"""Image grids: the mosaic puts each image in its cell (row-major) with grey gaps, and a grid of thousands of
images is written quickly as one picture."""
import time

import numpy as np
import torch

from indis.plots import image_mosaic, save_image_grid


def test_mosaic_places_each_image_in_its_cell():
    x = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # three 2x3 images: black, grey, white
    m = image_mosaic(x, rows=2)  # 2 columns: [img0 img1] / [img2 unused]
    assert m.shape == (2 * 2 + 1, 2 * 3 + 1, 1)
    assert np.all(m[0:2, 0:3] == 0.0) and np.all(m[0:2, 4:7] == 0.5) and np.all(m[3:5, 0:3] == 1.0)
    assert np.all(m[2, :] == 0.5) and np.all(m[:, 3] == 0.5) and np.all(m[3:5, 4:7] == 0.5)  # gaps, empty cell


def test_large_grid_is_one_fast_picture(tmp_path):
    x = torch.rand(3100, 1, 16, 16) * 2 - 1
    t = time.perf_counter()
    path = save_image_grid(x, tmp_path / "grid.png", rows=50)
    # one axes per image took minutes for 3,100 images; one mosaic takes about a second (bound far above that)
    assert time.perf_counter() - t < 60 and path.stat().st_size > 10_000
