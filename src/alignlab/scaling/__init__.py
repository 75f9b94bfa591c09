"""Scaling laws and emergence for any metric: fits with bootstrap intervals, held-out
prediction, trend tests and sudden-change detection.

Example:
    >>> import numpy as np
    >>> from alignlab.scaling import fit_kaplan, trend_test
    >>> n = np.geomspace(1e6, 1e9, 6)
    >>> fit = fit_kaplan(n, (8.8e13 / n) ** 0.076, n_boot=100)
    >>> round(fit.alpha.value, 3), trend_test(n, (8.8e13 / n) ** 0.076)["verdict"]
    (0.076, 'decreasing')
"""

from alignlab.scaling._validate import FitInputError
from alignlab.scaling.chinchilla import (
    HUBER_DELTA,
    ChinchillaFit,
    ComputeOptimal,
    fit_chinchilla,
    optimal_allocation,
)
from alignlab.scaling.emergence import (
    TEST as EMERGENCE_TEST,
)
from alignlab.scaling.emergence import (
    EmergenceResult,
    SurpriseResult,
    detect_emergence,
    predictability_and_surprise,
)
from alignlab.scaling.fits import (
    CurveFit,
    OffsetPowerFit,
    PowerLawFit,
    SigmoidFit,
    fit_kaplan,
    fit_power,
    fit_sigmoid,
)
from alignlab.scaling.plots import (
    plot_chinchilla,
    plot_emergence,
    plot_fit,
    save_emergence,
    save_fit,
    write_json,
)
from alignlab.scaling.validation import HoldoutResult, holdout_predict, trend_test

__all__ = [
    "EMERGENCE_TEST",
    "HUBER_DELTA",
    "ChinchillaFit",
    "ComputeOptimal",
    "CurveFit",
    "EmergenceResult",
    "FitInputError",
    "HoldoutResult",
    "OffsetPowerFit",
    "PowerLawFit",
    "SigmoidFit",
    "SurpriseResult",
    "detect_emergence",
    "fit_chinchilla",
    "fit_kaplan",
    "fit_power",
    "fit_sigmoid",
    "holdout_predict",
    "optimal_allocation",
    "plot_chinchilla",
    "plot_emergence",
    "plot_fit",
    "predictability_and_surprise",
    "save_emergence",
    "save_fit",
    "trend_test",
    "write_json",
]
