"""`adt_tf.analysis.plots`: every picture."""


import numpy as np

from adt_tf.analysis import (
    LambdaPoint,
    loss_grid,
    plot_curvature,
    plot_diversity,
    plot_lambda_study,
    plot_landscapes,
)
from adt_tf.analysis.curvature import CurvatureResult
from tests.adt_tf.analysis.helpers import EPS, check_png
from tests.helpers import make_tiny_images, tiny_classifier


def test_every_plot_writes_a_png_of_the_stated_size(tmp_path):
    rng = np.random.default_rng(0)
    pic = plot_diversity([(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))] * 5,
                         str(tmp_path / "div.png"), columns=3, panel_inches=2.0, dpi=50)
    assert (pic.width, pic.height) == (300, 2 * 100 + 20)
    check_png(pic)
    x, y = make_tiny_images(2, 16)
    grid = loss_grid(tiny_classifier(), x, y, EPS, grid_size=3)
    for kind in ("contour", "surface"):
        check_png(plot_landscapes({"a": grid, "b": grid}, str(tmp_path / f"l_{kind}.png"),
                                  kind=kind, panel_inches=2.0, dpi=50))
    curv = {"a": CurvatureResult(np.array([1.0, 2.0]), {}),
            "b": CurvatureResult(np.array([0.5, 0.7]), {})}
    check_png(plot_curvature(curv, str(tmp_path / "curv.png"), dpi=50))
    points = [LambdaPoint(0.0, 0.8, {"pgd": 0.4}, -3.1), LambdaPoint(0.01, 0.78, {"pgd": 0.45},
                                                                     -2.9),
              LambdaPoint(0.01, 0.79, {"pgd": 0.47}, None)]
    check_png(plot_lambda_study(points, str(tmp_path / "lam.png"), dpi=50))
