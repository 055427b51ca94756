"""Analyses of trained classifiers, with pictures: the diversity of adversarial samples
(EXP against PGD), loss landscapes, input-space curvature, and the lambda study.

One module per idea: `diversity`, `landscape`, `curvature`, `lambda_study`; `plots` draws
them (headless), `loading` finds the models, `runner` runs a configured set (`adt-analyze`).
"""

from adt_tf.analysis.curvature import (
    CurvatureResult,
    curvature_analysis,
    dominant_hessian_eigenvalue,
    hessian_vector_product,
)
from adt_tf.analysis.diversity import (
    DiversityResult,
    average_pairwise_distance,
    diversity_analysis,
    exp_samples,
    pca_project,
    pgd_samples,
)
from adt_tf.analysis.lambda_study import (
    LambdaPoint,
    evaluate_lambda_models,
    points_from_rows,
    read_trial_table,
)
from adt_tf.analysis.landscape import LandscapeResult, landscape_directions, loss_grid
from adt_tf.analysis.plots import (
    Picture,
    plot_curvature,
    plot_diversity,
    plot_lambda_study,
    plot_landscapes,
)
from adt_tf.analysis.runner import ANALYSES, AnalysisConfig, format_summary, run_analyses
from adt_tf.artifacts.loading import load_classifier, resolve_model_path

__all__ = [
    "ANALYSES", "AnalysisConfig", "CurvatureResult", "DiversityResult", "LambdaPoint",
    "LandscapeResult", "Picture", "average_pairwise_distance", "curvature_analysis",
    "diversity_analysis", "dominant_hessian_eigenvalue", "evaluate_lambda_models",
    "exp_samples", "format_summary", "hessian_vector_product", "landscape_directions",
    "load_classifier", "loss_grid", "pca_project", "pgd_samples", "plot_curvature",
    "plot_diversity", "plot_lambda_study", "plot_landscapes", "points_from_rows",
    "read_trial_table", "resolve_model_path", "run_analyses",
]
