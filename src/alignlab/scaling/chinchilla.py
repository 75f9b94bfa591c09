"""The Chinchilla parametric loss L(N, D) = E + A / N^alpha + B / D^beta and compute-optimal
allocation.

Fitted as Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", approach 3)
and the replication of Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") do
it:

* parameterise log L = LSE(e, a0 - alpha log N, b0 - beta log D) with E = exp(e), A = exp(a0),
  B = exp(b0), so every term stays positive and the optimiser works on log scales;
* minimise the Huber loss (delta = 1e-3) of the log-loss residuals — robust to the odd diverged
  or undertrained run;
* **sum** the Huber terms over points rather than averaging: Besiroglu et al. found that
  Hoffmann et al.'s optimiser stopped before convergence because of the loss scale. With the
  mean the objective is tiny, and L-BFGS-B's relative-reduction test (whose denominator is
  floored at 1) is met long before the optimum; for the same reason we also set L-BFGS-B's
  tolerances far below their defaults;
* L-BFGS from a grid of initialisations and keep the best. The grid is Hoffmann et al.'s
  (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a0, b0 in {0, 5, ..., 25}; 4500
  points). Rather than run L-BFGS from all 4500, we evaluate the objective at every grid point
  (vectorised, cheap) and start L-BFGS from the ``n_starts`` best; refits for the bootstrap
  start from the full-data optimum, plus any of the 3 best grid points of the resample that
  start lower than it.

Compute-optimal allocation for a budget C ~ 6 N D FLOPs (Kaplan et al. 2020, sec. 2.1) is
Hoffmann et al.'s eq. (4): N* = G (C/6)^(beta/(alpha+beta)), D* = (C/6) / N*, with
G = (alpha A / (beta B))^(1/(alpha+beta)).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from alignlab.scaling._resample import (
    IntArray,
    Resample,
    Resampler,
    bootstrap_params,
    expanded_tail,
    method_name,
    percentile_estimate,
    resolve_scheme,
)
from alignlab.scaling._threads import single_thread_blas
from alignlab.scaling._validate import (
    FitInputError,
    FloatArray,
    as_1d,
    check_level,
    check_n_boot,
)
from alignlab.stats import Estimate

HUBER_DELTA = 1e-3

# Hoffmann et al. 2022 (approach 3): the initialisation grid over (e, a0, alpha, b0, beta).
_GRID = np.array(
    list(
        itertools.product(
            np.arange(-1.0, 1.01, 0.5),  # e
            np.arange(0.0, 25.1, 5.0),  # a0 = log A
            np.arange(0.0, 2.01, 0.5),  # alpha
            np.arange(0.0, 25.1, 5.0),  # b0 = log B
            np.arange(0.0, 2.01, 0.5),  # beta
        )
    )
)
_BOOT_STARTS = 3


@dataclass(frozen=True)
class ComputeOptimal:
    """Loss-minimising model size and data for one compute budget.

    Attributes:
        flops: the budget C.
        n_params: N*, with interval from the bootstrap refits.
        n_tokens: D* = C / (6 N*).
        loss: L(N*, D*).
        tokens_per_param: D* / N*.
    """

    flops: float
    n_params: Estimate
    n_tokens: Estimate
    loss: Estimate
    tokens_per_param: Estimate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "flops": self.flops,
            "n_params": self.n_params.to_dict(),
            "n_tokens": self.n_tokens.to_dict(),
            "loss": self.loss.to_dict(),
            "tokens_per_param": self.tokens_per_param.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class ChinchillaFit:
    """L(N, D) = E + A / N^alpha + B / D^beta, fitted by Huber loss on log L.

    Attributes:
        E: irreducible loss.
        A, alpha: model-size term.
        B, beta: data term.
        r2: R^2 of log L.
        objective: summed Huber loss at the optimum.
        n: number of runs fitted.
        level, resample, n_boot, seed, tail: interval provenance (see fits.CurveFit).
        theta: internal (e, a0, alpha, b0, beta) of the point fit.
        boot_theta: the same for each bootstrap refit, shape (n_boot, 5).
        residuals: log-loss residuals of the point fit.
    """

    E: Estimate
    A: Estimate
    alpha: Estimate
    B: Estimate
    beta: Estimate
    r2: float
    objective: float
    n: int
    level: float
    resample: str
    n_boot: int
    seed: int
    huber_delta: float
    tail: float
    theta: FloatArray = field(repr=False)
    boot_theta: FloatArray = field(repr=False)
    residuals: FloatArray = field(repr=False)

    formula = "L(N, D) = E + A / N^alpha + B / D^beta"

    @property
    def params(self) -> dict[str, Estimate]:
        """The fitted parameters by name."""
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "B": self.B, "beta": self.beta}

    def predict(self, n_params: float, n_tokens: float, *, noise: bool = False, n_obs: int = 1) -> Estimate:
        """Loss of a model with ``n_params`` parameters trained on ``n_tokens`` tokens.

        The interval is the percentile bootstrap of refits (confidence interval of the mean
        loss); ``noise=True`` adds to each refit a residual drawn from the log-loss residuals
        (averaged over ``n_obs`` draws), giving a prediction interval for a new run.

        Example:
            >>> fit.predict(70e9, 1.4e12)  # doctest: +SKIP
            Estimate(value=1.94, ...)
        """
        if not (n_params > 0 and n_tokens > 0):
            raise FitInputError(f"N and D must be > 0, got N={n_params:g}, D={n_tokens:g}")
        ln_n, ln_d = np.array([math.log(n_params)]), np.array([math.log(n_tokens)])
        value = float(np.exp(_log_loss(self.theta[None, :], ln_n, ln_d))[0, 0])
        eta_b = _log_loss(self.boot_theta, ln_n, ln_d)[:, 0]
        if noise:
            if n_obs < 1:
                raise FitInputError(f"n_obs must be >= 1, got {n_obs}")
            dof = max(self.n - 5, 1)
            resid = self.residuals * math.sqrt(self.n / dof)
            rng = np.random.default_rng([self.seed, 1])
            eta_b = eta_b + rng.choice(resid, size=(eta_b.size, n_obs)).mean(axis=1)
        suffix = "refit+noise" if noise else "refit"
        return percentile_estimate(
            value,
            np.exp(eta_b),
            n=self.n,
            level=self.level,
            method=method_name(self.level, self.resample, suffix),
            tail=self.tail,
        )

    def compute_optimal(self, flops: float) -> ComputeOptimal:
        """N*, D* and the loss for a budget of ``flops`` (C ~ 6 N D), with bootstrap intervals.

        Example:
            >>> opt = fit.compute_optimal(5.76e23)  # doctest: +SKIP
            >>> opt.n_params  # doctest: +SKIP
        """
        if not (flops > 0 and math.isfinite(flops)):
            raise FitInputError(f"the FLOP budget must be a positive number, got {flops}")
        n_pt, d_pt = optimal_allocation(flops, *_natural(self.theta))
        n_b, d_b = optimal_allocation(flops, *_natural(self.boot_theta))
        loss_pt = _loss(_natural(self.theta), n_pt, d_pt)
        loss_b = _loss(_natural(self.boot_theta), n_b, d_b)
        method = method_name(self.level, self.resample, "refit")

        def est(value: float, samples: FloatArray) -> Estimate:
            return percentile_estimate(
                value, samples, n=self.n, level=self.level, method=method, tail=self.tail
            )

        return ComputeOptimal(
            flops=float(flops),
            n_params=est(float(n_pt), np.asarray(n_b)),
            n_tokens=est(float(d_pt), np.asarray(d_b)),
            loss=est(float(loss_pt), np.asarray(loss_b)),
            tokens_per_param=est(float(d_pt / n_pt), np.asarray(d_b / n_b)),
        )

    def to_dict(self) -> dict[str, Any]:
        """All numbers as a JSON-ready dict."""
        return {
            "form": "chinchilla",
            "formula": self.formula,
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "r2": self.r2,
            "r2_space": "log y",
            "objective": self.objective,
            "huber_delta": self.huber_delta,
            "n": self.n,
            "level": self.level,
            "resample": self.resample,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "tail": self.tail,
            "interval": "expanded percentile bootstrap of refits (Hesterberg 2015)",
        }


def optimal_allocation(
    flops: float,
    E: float | FloatArray,
    A: float | FloatArray,
    alpha: float | FloatArray,
    B: float | FloatArray,
    beta: float | FloatArray,
) -> tuple[Any, Any]:
    """Closed-form compute-optimal (N*, D*) for C = 6 N D (Hoffmann et al. 2022, eq. 4).

    Upper-case arguments are the paper's symbols.

    Minimising E + A N^-alpha + B D^-beta subject to 6 N D = C gives
    N* = G (C/6)^(beta/(alpha+beta)) and D* = (C/6) / N* with G = (alpha A/(beta B))^(1/(alpha+beta)).
    E does not move the optimum; it is accepted so that a parameter tuple can be splatted in.

    Example:
        >>> n, d = optimal_allocation(5.76e23, 1.69, 406.4, 0.34, 410.7, 0.28)
        >>> f"{n:.2e} {d:.2e}"
        '3.22e+10 2.98e+12'
    """
    del E
    a, b = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        g = (a * np.asarray(A) / (b * np.asarray(B))) ** (1.0 / (a + b))
        n_opt = g * (flops / 6.0) ** (b / (a + b))
        d_opt = (flops / 6.0) / n_opt
    if n_opt.ndim == 0:
        return float(n_opt), float(d_opt)
    return n_opt, d_opt


# --------------------------------------------------------------------------- the objective


def _log_loss(theta: FloatArray, ln_n: FloatArray, ln_d: FloatArray) -> FloatArray:
    """log L for parameter rows theta (G, 5) at points (n,): LSE of the three log-terms."""
    e, a0, al, b0, be = (theta[:, i : i + 1] for i in range(5))
    terms = np.stack(np.broadcast_arrays(e, a0 - al * ln_n[None, :], b0 - be * ln_d[None, :]), axis=0)
    return _lse(terms)


def _lse(z: FloatArray) -> FloatArray:
    """log-sum-exp over axis 0 (scipy.special.logsumexp is ~30x slower on these small arrays,
    and the objective is evaluated ~10^5 times per bootstrapped fit)."""
    m = z.max(axis=0)
    return np.asarray(m + np.log(np.exp(z - m).sum(axis=0)), dtype=np.float64)


def _huber(r: FloatArray, delta: float) -> FloatArray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _objective(
    theta: FloatArray, ln_n: FloatArray, ln_d: FloatArray, ln_l: FloatArray, delta: float
) -> tuple[float, FloatArray]:
    """Summed Huber loss of log-residuals and its gradient (softmax weights of the LSE)."""
    z = np.stack([np.full_like(ln_n, theta[0]), theta[1] - theta[2] * ln_n, theta[3] - theta[4] * ln_d])
    lse = _lse(z)
    r = lse - ln_l
    psi = np.clip(r, -delta, delta)  # Huber derivative
    soft = np.exp(z - lse)  # d LSE / d term
    grad = np.array(
        [
            psi @ soft[0],
            psi @ soft[1],
            -(psi * soft[1]) @ ln_n,
            psi @ soft[2],
            -(psi * soft[2]) @ ln_d,
        ]
    )
    return float(_huber(r, delta).sum()), grad


def _grid_objective(
    grid: FloatArray, ln_n: FloatArray, ln_d: FloatArray, ln_l: FloatArray, delta: float
) -> FloatArray:
    r = _log_loss(grid, ln_n, ln_d) - ln_l[None, :]
    return np.asarray(_huber(r, delta).sum(axis=1))


def _minimise(
    starts: FloatArray, ln_n: FloatArray, ln_d: FloatArray, ln_l: FloatArray, delta: float
) -> tuple[FloatArray, float]:
    best_x, best_f = starts[0], math.inf
    for x0 in starts:
        res = optimize.minimize(
            _objective,
            x0,
            args=(ln_n, ln_d, ln_l, delta),
            jac=True,
            method="L-BFGS-B",
            # Far below the defaults: the summed Huber objective is ~1e-6 near the optimum, and
            # L-BFGS-B's relative-reduction test is floored at |f| = 1 (Besiroglu et al. 2024).
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000, "maxcor": 20},
        )
        if np.isfinite(res.fun) and res.fun < best_f:
            best_x, best_f = np.asarray(res.x, dtype=np.float64), float(res.fun)
    if not math.isfinite(best_f):
        raise FloatingPointError("no Chinchilla fit converged")
    return best_x, best_f


def _natural(theta: FloatArray) -> tuple[Any, Any, Any, Any, Any]:
    """(E, A, alpha, B, beta) from (e, a0, alpha, b0, beta), for one row or many."""
    t = np.asarray(theta, dtype=np.float64)
    with np.errstate(over="ignore"):
        return (np.exp(t[..., 0]), np.exp(t[..., 1]), t[..., 2], np.exp(t[..., 3]), t[..., 4])


def _loss(nat: tuple[Any, Any, Any, Any, Any], n: Any, d: Any) -> Any:
    e, a, al, b, be = nat
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return e + a / np.power(n, al) + b / np.power(d, be)


# --------------------------------------------------------------------------- the fit


@single_thread_blas
def fit_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    huber_delta: float = HUBER_DELTA,
    n_starts: int = 16,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
    resample: Resample = "auto",
) -> ChinchillaFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta to runs of varied size and data.

    Args:
        n_params: parameters N of each run (> 0).
        n_tokens: training tokens D of each run (> 0).
        loss: final loss of each run (> 0).
        huber_delta: Huber threshold on log-loss residuals (1e-3 as in Hoffmann et al.).
        n_starts: L-BFGS starts, the best points of the 4500-point initialisation grid.
        level: interval coverage.
        n_boot: bootstrap refits (each a warm-started L-BFGS run, ~30 ms for 36 runs).
        seed: resampling seed.
        resample: ``"auto"``, ``"points"``, or ``"within_x"`` (seeds within each (N, D) cell).

    Returns:
        ChinchillaFit with E, A, alpha, B, beta as Estimates, ``predict(N, D)`` and
        ``compute_optimal(C)``.

    Raises:
        FitInputError: mismatched lengths, non-positive or non-finite values, fewer than 6
            distinct (N, D) runs or fewer than 3 distinct N or D.

    Example:
        >>> import numpy as np
        >>> n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 5),
        ...                                        np.geomspace(1e9, 1e11, 5)))
        >>> fit = fit_chinchilla(n, d, 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28, n_boot=20)
        >>> round(fit.alpha.value, 2), round(fit.beta.value, 2)
        (0.34, 0.28)
    """
    ln_arr = []
    for name, v in (("n_params", n_params), ("n_tokens", n_tokens), ("loss", loss)):
        arr = as_1d(v, name)
        if (arr <= 0).any():
            raise FitInputError(f"{name} must all be > 0 (the fit works in logs); got {arr.min():g}")
        ln_arr.append(np.log(arr))
    ln_n, ln_d, ln_l = ln_arr
    if not ln_n.size == ln_d.size == ln_l.size:
        raise FitInputError(
            f"n_params, n_tokens and loss differ in length: {ln_n.size}, {ln_d.size}, {ln_l.size}"
        )
    keys = np.column_stack([ln_n, ln_d])
    n_cells = np.unique(keys, axis=0).shape[0]
    if n_cells < 6 or np.unique(ln_n).size < 3 or np.unique(ln_d).size < 3:
        raise FitInputError(
            "a Chinchilla fit has 5 parameters and needs at least 6 distinct (N, D) runs with at "
            f"least 3 distinct N and 3 distinct D; got {n_cells} runs, "
            f"{np.unique(ln_n).size} N, {np.unique(ln_d).size} D"
        )
    if not huber_delta > 0:
        raise FitInputError(f"huber_delta must be > 0, got {huber_delta}")
    if n_starts < 1:
        raise FitInputError(f"n_starts must be >= 1, got {n_starts}")
    check_level(level)
    check_n_boot(n_boot)

    g = _grid_objective(_GRID, ln_n, ln_d, ln_l, huber_delta)
    order = np.argsort(g)
    theta, obj = _minimise(_GRID[order[:n_starts]], ln_n, ln_d, ln_l, huber_delta)

    scheme = resolve_scheme(keys, resample)
    rs = Resampler(keys, ln_l, scheme, min_distinct=6, seed=seed)

    def refit(i: IntArray, ln_li: FloatArray) -> FloatArray:
        # Warm start from the full-data optimum; grid points join only if they start lower.
        gi = _grid_objective(_GRID, ln_n[i], ln_d[i], ln_li, huber_delta)
        top = _GRID[np.argpartition(gi, _BOOT_STARTS)[:_BOOT_STARTS]]
        f_warm = _objective(theta, ln_n[i], ln_d[i], ln_li, huber_delta)[0]
        top = top[_grid_objective(top, ln_n[i], ln_d[i], ln_li, huber_delta) < f_warm]
        return _minimise(np.vstack([theta, top]), ln_n[i], ln_d[i], ln_li, huber_delta)[0]

    boot = bootstrap_params(refit, rs, n_boot, 5)
    fitted = _log_loss(theta[None, :], ln_n, ln_d)[0]
    resid = ln_l - fitted
    sst = float(np.sum((ln_l - ln_l.mean()) ** 2))
    method = method_name(level, scheme)
    tail = expanded_tail(level, ln_l.size, ln_l.size - 5, scheme)
    nat, nat_b = _natural(theta), _natural(boot)

    def est(i: int) -> Estimate:
        return percentile_estimate(
            float(nat[i]),
            np.asarray(nat_b[i]),
            n=ln_l.size,
            level=level,
            method=method,
            tail=tail,
        )

    return ChinchillaFit(
        E=est(0),
        A=est(1),
        alpha=est(2),
        B=est(3),
        beta=est(4),
        r2=1.0 - float(resid @ resid) / sst if sst > 0 else float("nan"),
        objective=obj,
        n=ln_l.size,
        level=level,
        resample=scheme,
        n_boot=boot.shape[0],
        seed=seed,
        huber_delta=huber_delta,
        tail=tail,
        theta=theta,
        boot_theta=boot,
        residuals=resid,
    )
