"""Minimising the profiled criterion over theta: bounded quasi-Newton with a Newton check.

The profiled REML criterion or deviance (:mod:`lmmlib.pls`) is a smooth function of a few
parameters theta, some bounded below by 0.  :func:`optimize_theta` minimises it with
L-BFGS-B (a bounded quasi-Newton method) on the analytic gradient of :mod:`lmmlib.gradient`
when it is given one (finite-difference gradients otherwise) and then checks the result with
the *Newton decrement*

    delta = g' H^{-1} g / 2,

the decrease of the criterion that a Newton step from theta would still achieve (``g`` the
gradient, ``H`` the Hessian, both restricted to the parameters not held at a bound).

Why that test: the criterion is on the deviance scale (-2 log-likelihood), whose Hessian is
twice the observed information, i.e. twice the inverse covariance of the estimates.  So
``delta`` measures the distance to the optimum in units that depend neither on the units of
the data nor on the number of observations: the criterion is about ``delta`` above its minimum
and theta about ``sqrt(delta)`` standard errors from it.  A test relative to the size of the
criterion, or on the raw gradient, would not: the criterion grows with n (about 1e7 for a
million rows), and the gradient scales with the units of the predictors.  (The optimiser is
given theta for columns scaled to a root mean square near 1, see :mod:`lmmlib.pls`, so that the
starting point and the finite-difference steps suit every problem alike.)

>>> target = np.array([2.0, -1.0])
>>> theta, info = optimize_theta(lambda t: float((t - target) @ (t - target)),
...                              np.ones(2), np.array([0.0, -np.inf]))
>>> theta.round(6).tolist(), info["converged"]
([2.0, -1.0], True)
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

__all__ = ["optimize_theta", "finite_difference_gradient", "gradient_and_hessian",
           "difference_steps"]

#: a result is accepted when the predicted further decrease of the criterion is below this
#: (deviance units: theta is then within about 1e-4 standard errors of the optimum)
DECREMENT_TOL = 1e-8
#: an L-BFGS-B pass stops when an iteration lowers the criterion by less than this
ITERATION_TOL = 1e-9
#: L-BFGS-B stops after this many evaluations in a row next to the best point without progress
STALL_LIMIT = 2
#: relative rounding error of one evaluation of the criterion (a few machine epsilons)
NOISE = 1e-15
#: with the analytic gradient, L-BFGS-B first searches log(theta) of the diagonal elements,
#: down to this value (then tries 0, the bound)
LOG_FLOOR = 1e-8
#: cap of theta in the log-scale search (a line-search step in log theta overflows exp
#: otherwise; later passes search theta itself, unbounded)
LOG_CEIL = 1e10
#: ... until one of them falls below this; then the search goes on in theta
LOG_SNAP = 1e-2
#: elements of theta (optimiser's scale) below this are tried on their bound 0 at the end
SNAP_TO_BOUND = 1e-6


def difference_steps(x: np.ndarray, central: bool) -> np.ndarray:
    """Finite-difference steps: ``4e-6 max(1, |x_i|)`` (central) or ``1e-7 max(1, |x_i|)``."""
    return (4e-6 if central else 1e-7) * np.maximum(1.0, np.abs(x))


def finite_difference_gradient(f, x, fx, lower, central=True, step=None):
    """Gradient of ``f`` at ``x`` by finite differences, never stepping below ``lower``.

    Forward differences ``(f(x + h e_i) - f(x)) / h`` cost one evaluation per parameter;
    central differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` are accurate to O(h^2), and at a
    bound the one-sided ``(-3 f(x) + 4 f(x + h e_i) - f(x + 2h e_i)) / 2h`` is used instead.
    Steps from :func:`difference_steps`, or ``step max(1, |x_i|)`` (central differences).
    """
    g = np.empty_like(x)
    if step is not None:
        central = True
    steps = difference_steps(x, central) if step is None else step * np.maximum(1.0, np.abs(x))
    for i, h in enumerate(steps):
        e = np.zeros_like(x)
        e[i] = h
        if not central:
            g[i] = (f(x + e) - fx) / h
        elif x[i] - h >= lower[i]:
            g[i] = (f(x + e) - f(x - e)) / (2 * h)
        else:
            g[i] = (-3 * fx + 4 * f(x + e) - f(x + 2 * e)) / (2 * h)
    return g


def gradient_and_hessian(f, x, fx, lower, h=1e-3, h_gradient=1e-5):
    """Gradient and Hessian of ``f`` at ``x`` by finite differences, ``p(p + 7)/2`` values.

    The gradient by central differences with steps ``h_gradient max(1, |x_i|)`` (one-sided,
    ``(-3 f(x) + 4 f(x + h e_i) - f(x + 2h e_i)) / 2h``, where ``x - h e_i`` is below
    ``lower``): a small step, since the error of a central difference grows with ``h^2``
    times the third derivative, which is large for a criterion with a large curvature.  The
    Hessian with steps ``h_i = h max(1, |x_i|)``: ``H_ii = (f_+ - 2 f + f_-) / h_i^2`` (or the
    one-sided ``(f - 2 f(x + h e_i) + f(x + 2h e_i)) / h_i^2``) and ``H_ij = (f(x + h_i e_i +
    h_j e_j) - f(x + h_i e_i) - f(x + h_j e_j) + f) / (h_i h_j)``: a step large enough that
    rounding in f (about 1e-8 for a criterion near 1e7) does not swamp second differences.

    >>> g, H = gradient_and_hessian(lambda t: t[0] ** 2 + t[0] * t[1], np.array([1.0, 2.0]),
    ...                             3.0, np.zeros(2))
    >>> g.round(6).tolist(), H.round(6).tolist()
    ([4.0, 1.0], [[2.0, 1.0], [1.0, 0.0]])
    """
    with np.errstate(invalid="ignore", over="ignore"):  # inf where a factorization failed
        return _gradient_and_hessian(f, x, fx, lower, h, h_gradient)


def _gradient_and_hessian(f, x, fx, lower, h, h_gradient):
    p = len(x)
    g = finite_difference_gradient(f, x, fx, lower, step=h_gradient)
    steps = h * np.maximum(1.0, np.abs(x))
    E = np.diag(steps)
    f_plus = np.array([f(x + E[i]) for i in range(p)])
    H = np.empty((p, p))
    for i in range(p):
        if x[i] - steps[i] >= lower[i]:
            H[i, i] = (f_plus[i] - 2 * fx + f(x - E[i])) / steps[i] ** 2
        else:
            H[i, i] = (fx - 2 * f_plus[i] + f(x + 2 * E[i])) / steps[i] ** 2
        for j in range(i):
            f_ij = f(x + E[i] + E[j])
            H[i, j] = H[j, i] = (f_ij - f_plus[i] - f_plus[j] + fx) / (steps[i] * steps[j])
    return g, H


def _free(theta, g, lower):
    """Parameters not held at their bound: at the bound with g > 0 the minimum is there."""
    return ~((theta <= lower) & (g > 0))


def _newton_step(g, H, theta, lower):
    """Newton decrement and step on the free parameters; (inf, None) if H is not positive
    definite there."""
    free = _free(theta, g, lower)
    step = np.zeros_like(theta)
    if not free.any():
        return 0.0, step
    H_free = H[np.ix_(free, free)]
    if not np.all(np.isfinite(H_free)) or not np.all(np.isfinite(g[free])):
        return np.inf, None
    try:
        np.linalg.cholesky(H_free)
    except np.linalg.LinAlgError:
        return np.inf, None
    direction = np.linalg.solve(H_free, g[free])
    step[free] = -direction
    return 0.5 * float(g[free] @ direction), step


def _descent_from_boundary(f, theta, ftheta, lower, step=1e-3):
    """A point just inside the bounds with a lower objective than ``theta``, or None.

    The profiled criteria are even functions of a diagonal template element that is 0 (the
    sign of a column of T does not change T T'), so their derivative there is 0 whatever the
    curvature, and a gradient method can stop at such a point even when it is a maximum in
    that direction; near 0 the derivative is nearly 0 for the same reason.  Moving such an
    element to ``step`` tells whether the objective decreases away from the boundary.
    """
    for i in np.flatnonzero((lower == 0) & (theta < step)):
        trial = theta.copy()
        trial[i] = step
        if f(trial) < ftheta:
            return trial
    return None


class _Stalled(Exception):
    """L-BFGS-B's line search keeps evaluating points no better than the best one."""


class _Evaluations:
    """The objective with a count of evaluations and the best point seen.

    A point where the factorization fails (numerically not positive definite at an extreme
    theta) gets the value inf, which makes the line search step back.
    """

    def __init__(self, objective, gradient=None):
        self.objective = objective
        self.gradient = gradient
        self.count = 0
        self.n_gradients = 0
        self.best_value, self.best_theta = np.inf, None
        self.last_theta = self.last_gradient = None
        self.stalled = 0
        self.analytic = False  # whether last_gradient is the analytic one

    def __call__(self, theta: np.ndarray) -> float:
        self.count += 1
        try:
            value = float(self.objective(theta))
        except np.linalg.LinAlgError:
            return np.inf
        if value < self.best_value:
            self.best_value, self.best_theta = value, theta.copy()
        return value

    def value_and_gradient(self, theta: np.ndarray):
        """Value and analytic gradient at theta (one evaluation), or (value, None) where the
        gradient function has none (then finite differences are used)."""
        if self.gradient is None:
            return self(theta), None
        self.count += 1
        try:
            value, g = self.gradient(theta)
            value = float(value)
        except np.linalg.LinAlgError:
            return np.inf, None
        if g is not None:
            self.n_gradients += 1
        if value < self.best_value:
            self.best_value, self.best_theta = value, theta.copy()
        return value, g

    def gradient_at(self, theta, value, lower, central: bool):
        """The analytic gradient at theta if there is one, else finite differences
        (``value`` is f(theta), already known)."""
        self.analytic = False
        if self.gradient is not None:
            _, g = self.value_and_gradient(theta)
            if g is not None:
                self.analytic = True
                return g
        return finite_difference_gradient(self, theta, value, lower, central)

    def hessian(self, theta, value, lower, h: float = 1e-5):
        """Gradient and Hessian at theta: with the analytic gradient, the Hessian by forward
        differences of it, ``H[:, i] = (g(x + h_i e_i) - g(x)) / h_i`` with ``h_i = h
        max(1, |x_i|)``, symmetrized (p + 1 gradients); otherwise
        :func:`gradient_and_hessian` (``p(p + 7)/2`` values)."""
        if self.gradient is not None:
            _, g = self.value_and_gradient(theta)
            columns = []
            for i, step in enumerate(h * np.maximum(1.0, np.abs(theta))):
                if g is None:
                    break
                e = np.zeros_like(theta)
                e[i] = step
                _, g_i = self.value_and_gradient(theta + e)
                if g_i is None:
                    g = None
                    break
                columns.append((g_i - g) / step)
            if g is not None:
                H = np.array(columns).T
                return g, 0.5 * (H + H.T)
        return gradient_and_hessian(self, theta, value, lower)

    def with_gradient(self, theta: np.ndarray, lower: np.ndarray, central: bool):
        """Value and gradient (analytic where available, else finite differences), for
        L-BFGS-B.

        Raises :class:`_Stalled` after ``STALL_LIMIT`` calls in a row at points within 1e-4 of
        the best one that do not improve on it by ``ITERATION_TOL``: at the optimum, rounding
        in f can make the line search try 20 or 40 points before it gives up.
        """
        best_value, best_theta = self.best_value, self.best_theta
        value, g = self.value_and_gradient(theta)
        near = best_theta is not None and np.max(np.abs(theta - best_theta)) < 1e-4
        stalled = near and value >= best_value - ITERATION_TOL
        self.stalled = self.stalled + 1 if stalled else 0
        if self.stalled >= STALL_LIMIT:
            raise _Stalled
        self.analytic = g is not None
        if g is None:
            g = finite_difference_gradient(self, theta, value, lower, central)
        self.last_theta, self.last_gradient = theta.copy(), g
        return value, g


def _lbfgsb(f: _Evaluations, theta, lower, central: bool, log_scale: bool = False) -> tuple:
    """One L-BFGS-B run from ``theta``, stopped once an iteration gains < ITERATION_TOL or the
    line search stalls.  Returns ``(x, value, message, inverse_hessian)``.

    After a stall, the inverse-Hessian approximation is rebuilt from the iterates and their
    gradients (the pairs L-BFGS-B itself keeps), or None if there are none.

    With ``log_scale`` the positive diagonal template elements are searched as
    ``psi = log(theta)`` (bounded below by ``log(LOG_FLOOR)``), where the criterion's
    curvature varies far less between terms with many and few levels (a crossed design of
    InstEval's shape: 17 instead of 27 steps with the analytic gradient).  When an element
    falls below ``LOG_SNAP`` (on its way to the bound 0, which psi never reaches) the search
    goes on in theta itself.  The returned inverse Hessian is that of theta.
    """
    previous = [np.inf]
    iterates = []  # (theta, gradient) after each iteration
    bound = [False]  # the log-scale search stopped on its way to a bound
    logged = (lower == 0) & (theta > 0) if log_scale else np.zeros(len(theta), dtype=bool)

    def to_theta(x):
        t = np.array(x, dtype=float)
        # capped: a long line-search step in log theta would overflow exp (a finite upper
        # bound instead changes L-BFGS-B's path and costs it convergence on Penicillin)
        t[logged] = np.exp(np.minimum(x[logged], np.log(LOG_CEIL)))
        return t

    def fun(x):
        t = to_theta(x)
        value, g = f.with_gradient(t, lower, central)
        g = np.array(g, dtype=float)
        g[logged] *= t[logged]  # d f / d psi = theta d f / d theta
        return value, g

    def stop_when_flat(intermediate_result):
        t = to_theta(intermediate_result.x)
        if np.array_equal(f.last_theta, t):
            iterates.append((f.last_theta, f.last_gradient, intermediate_result.fun))
        if previous[0] - intermediate_result.fun < ITERATION_TOL:
            raise StopIteration
        if np.any(logged & (t < LOG_SNAP)):  # heading for a bound, where psi is no help
            bound[0] = True
            raise StopIteration
        previous[0] = intermediate_result.fun

    x0 = np.array(theta, dtype=float)
    x0[logged] = np.log(theta[logged])
    lower_x = np.array(lower, dtype=float)
    lower_x[logged] = np.log(LOG_FLOOR)
    x0 = np.maximum(x0, lower_x)
    f.stalled = 0
    try:
        res = optimize.minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=optimize.Bounds(lower_x, np.full_like(lower_x, np.inf)),
            options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": 1000, "maxcor": 20},
            callback=stop_when_flat,
        )
    except _Stalled:
        message = f"line search stalled after {STALL_LIMIT} trials"
        if not iterates or iterates[-1][2] > f.best_value + DECREMENT_TOL:
            return f.best_theta, f.best_value, message, None
        f.last_theta, f.last_gradient, value = iterates[-1]
        return f.last_theta, value, message, _inverse_hessian(iterates)
    message = str(res.message)
    if "StopIteration" in message:
        message = f"an iteration gained < {ITERATION_TOL:g}"
    x = np.asarray(res.x, dtype=float)
    if not logged.any():
        return x, float(res.fun), message, res.hess_inv
    t = to_theta(x)
    if bound[0]:
        # towards a bound the slope in psi (theta times that in theta) vanishes and psi
        # would crawl: go on in theta itself, which reaches the bound
        return _lbfgsb(f, t, lower, central)
    D = np.where(logged, t, 1.0)  # g_psi = D g_theta, so H_theta^{-1} ~ D H_psi^{-1} D
    return t, float(res.fun), message, _Scaled(res.hess_inv, D)


class _Scaled:
    """``v -> D H^{-1} (D v)``: an inverse Hessian of psi as one of theta."""

    def __init__(self, inverse, D):
        self.inverse, self.D = inverse, D

    def matvec(self, v):
        return self.D * self.inverse.matvec(self.D * np.asarray(v, dtype=float))


def _inverse_hessian(iterates, memory: int = 20):
    """L-BFGS's inverse-Hessian approximation from successive (theta, gradient) pairs."""
    pairs = [(x1 - x0, g1 - g0) for (x0, g0, _), (x1, g1, _) in zip(iterates, iterates[1:])]
    pairs = [(s, y) for s, y in pairs[-memory:] if s @ y > 1e-12 * np.linalg.norm(s) ** 2]
    if not pairs:
        return None
    return optimize.LbfgsInvHessProduct(np.array([s for s, _ in pairs]),
                                        np.array([y for _, y in pairs]))


def _decrement(g, inverse_hessian, theta, value, lower, noise=None,
               central: bool = False, analytic: bool = False) -> tuple[float, float]:
    """Newton decrement ``g' H^{-1} g / 2`` of a forward-difference gradient on the free
    parameters, and the same of its rounding error: ``noise / h`` per component, ``noise``
    the rounding error of f (default ``NOISE |f|``), which matters when the criterion is
    large; ``inverse_hessian(v)`` applies ``H^{-1}``.  An ``analytic`` gradient has no
    truncation error and a rounding error far below a difference's: its error is taken as 0."""
    free = _free(theta, g, lower)
    g = np.where(free, g, 0.0)
    noise = NOISE * max(1.0, abs(value)) if noise is None else noise
    error = np.where(free & (not analytic), noise / difference_steps(theta, central), 0.0)
    return 0.5 * float(g @ inverse_hessian(g)), 0.5 * float(error @ inverse_hessian(error))


def _measured_noise(f, theta, value) -> float:
    """The rounding error of f at theta, measured: twice the largest change of f between theta
    and two points that differ from it by one part in 1e13 (which moves the true value by far
    less), but at least two machine epsilons of |f|."""
    changes = [abs(f(theta * (1 + 1e-13 * sign)) - value) for sign in (1, -1)]
    return max(2 * max(changes), 4.4e-16 * abs(value))


def _accept(f, g, inverse_hessian, theta, value, lower,
            central: bool = False, analytic: bool = False) -> tuple[bool, float]:
    """Whether the decrement is below ``DECREMENT_TOL`` allowing for rounding: first with the
    assumed ``NOISE``, then, if only that allowance stands in the way, with the measured one."""
    decrement, error = _decrement(g, inverse_hessian, theta, value, lower, central=central,
                                  analytic=analytic)
    if decrement < DECREMENT_TOL <= decrement + error:
        noise = _measured_noise(f, theta, value)
        decrement, error = _decrement(g, inverse_hessian, theta, value, lower, noise, central)
    return decrement + error < DECREMENT_TOL, decrement


def _quasi_newton(f: _Evaluations, theta, lower, hessian, max_iter: int = 50,
                  central: bool = True):
    """BFGS from a known Hessian, for a start near the minimum (a refit): Newton steps with
    the current approximation ``B`` (projected on the bounds, backtracked), forward-difference
    gradients, and the BFGS update of ``B``.  Returns ``(theta, value, decrement, converged)``;
    not converged if ``B`` stops being positive definite or a step cannot lower the value."""
    B = np.array(hessian, dtype=float)
    value = f(theta)
    # central differences (``central``): a forward difference's O(h) bias moves the point
    # where the gradient vanishes by about h/2 (5e-8), which a refit would then stop short by
    g = f.gradient_at(theta, value, lower, central)
    for _ in range(max_iter):
        free = _free(theta, g, lower)
        B_free = B[np.ix_(free, free)]
        try:
            np.linalg.cholesky(B_free)
        except np.linalg.LinAlgError:
            break
        B_inv = np.zeros_like(B)
        B_inv[np.ix_(free, free)] = np.linalg.inv(B_free)

        def inverse_hessian(v, B_inv=B_inv):
            return B_inv @ v

        accepted, decrement = _accept(f, g, inverse_hessian, theta, value, lower, central,
                                      analytic=f.analytic)
        if accepted:
            return theta, value, decrement, True
        step = -inverse_hessian(g)
        for t in 0.5 ** np.arange(20):
            trial = np.maximum(theta + t * step, lower)
            trial_value = f(trial)
            if trial_value < value - 1e-4 * t * decrement:  # sufficient decrease (Armijo)
                break
        else:
            break
        trial_g = f.gradient_at(trial, trial_value, lower, central)
        s, y = trial - theta, trial_g - g
        if s @ y > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y):  # curvature condition
            Bs = B @ s
            B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (s @ y)
        theta, value, g = trial, trial_value, trial_g
    return theta, value, np.inf, False


def optimize_theta(
    objective, start: np.ndarray, lower: np.ndarray, max_passes: int = 4, hessian=None,
    fallback=None, polish: bool = True, gradient=None,
) -> tuple[np.ndarray, dict]:
    """Minimise ``objective(theta)`` subject to ``theta >= lower``.

    0. With ``hessian`` (the Hessian near ``start``, e.g. at the estimate of a fit being
       refitted), quasi-Newton steps from it (:func:`_quasi_newton`), which need far fewer
       evaluations than L-BFGS-B from a good start; if they do not converge, go on with 1.
       With ``polish`` (for a refit by the other criterion) they use central differences and
       end with one Newton step from a finite-difference Hessian, which puts theta within
       about 1e-8 of the optimum a fresh fit reaches; without it (a bootstrap refit, where
       speed matters and 1e-7 does not) forward differences, as L-BFGS-B's.
    1. L-BFGS-B with ``gradient(theta) -> (value, gradient or None)`` if given (the first
       pass on log(theta) of the diagonal elements, see :func:`_lbfgsb`), else with
       forward-difference gradients, stopped when an iteration lowers the objective by less
       than ``ITERATION_TOL`` or ``STALL_LIMIT`` evaluations in a row bring no such progress.
       Where ``gradient`` returns None (a singular vector-valued template), differences.
    2. A point with a variance at 0 that is not a minimum along that variance (see
       :func:`_descent_from_boundary`) is left for the interior and the search resumes.
    3. The Newton decrement is computed with L-BFGS-B's own inverse-Hessian approximation and
       the gradient it already has (no extra evaluations); if it is below ``DECREMENT_TOL``
       even allowing for rounding in the forward differences (:func:`_accept`), the point
       is accepted.
    4. Otherwise a finite-difference Hessian (of the analytic gradient if there is one, else
       :func:`gradient_and_hessian`) gives the decrement
       exactly; if it is still too large, the (projected, backtracked) Newton step is taken and
       the check repeated, or, if the Hessian is not positive definite, L-BFGS-B runs again
       with central differences.

    5. With ``fallback`` (a standard start, e.g. lme4's ``T = I``) different from ``start``:
       if the objective there is below the optimum found, the search stopped far from the
       minimum (a badly scaled start such as theta = 1e6, where the criterion is so flat that
       every test of convergence passes), and it is run again from ``fallback``; the better
       optimum is kept.

    At most ``max_passes`` rounds; ``converged`` is False if none accepted the point.
    Returns the minimiser and ``optinfo``: ``{"optimizer", "n_evaluations", "n_gradients",
    "converged", "message", "objective", "passes", "decrement"}`` (``n_evaluations`` counts
    every evaluation of the criterion, ``n_gradients`` those that also gave the gradient).
    """
    f = _Evaluations(objective, gradient)
    lower = np.asarray(lower, dtype=float)
    theta = np.asarray(start, dtype=float)
    converged, decrement, message, newton, passes = False, np.inf, "", False, 0
    if hessian is not None:
        theta, value, decrement, converged = _quasi_newton(f, theta, lower, hessian,
                                                           central=polish)
        message = "quasi-Newton from the given Hessian"
        if converged and _descent_from_boundary(f, theta, value, lower) is not None:
            converged = False
        if converged and polish:
            # polish: one Newton step from a finite-difference Hessian and central gradient.
            # Near the optimum the criterion changes by less than its rounding error, so the
            # step is taken on the strength of the gradient, as a fresh fit's last step is;
            # without it a refit stops about 1e-7 short of a fresh fit's theta.
            g, H = f.hessian(theta, value, lower)
            _, step = _newton_step(g, H, theta, lower)
            if step is not None and np.all(np.abs(step) < 1e-3 * np.maximum(1, np.abs(theta))):
                trial = np.maximum(theta + step, lower)
                trial_value = f(trial)
                if trial_value <= value + NOISE * 16 * max(1.0, abs(value)):
                    f.best_theta, f.best_value = trial, min(trial_value, f.best_value)
        if not converged:
            theta = f.best_theta
    for attempt in range(0 if converged else max_passes):
        passes = attempt + 1
        if not newton:
            theta, value, message, hess_inv = _lbfgsb(
                f, theta, lower, central=attempt > 0,
                log_scale=attempt == 0 and f.gradient is not None)
            message = f"L-BFGS-B: {message}"
            if f.best_value < value - DECREMENT_TOL:  # after an abnormal stop, an earlier iterate
                theta, value = f.best_theta, f.best_value
        else:
            theta, value = f.best_theta, f.best_value
        inside = _descent_from_boundary(f, theta, value, lower)
        if inside is not None:  # a stationary point on the boundary that is not a minimum
            theta, newton = inside, False
            continue
        if not newton and hess_inv is not None and np.array_equal(f.last_theta, theta):
            # L-BFGS-B's forward-difference gradient at theta is at hand
            accepted, decrement = _accept(f, f.last_gradient, hess_inv.matvec, theta, value, lower,
                                          analytic=f.analytic)
            if accepted:
                converged = True
                break
        g, H = f.hessian(theta, value, lower)
        decrement, step = _newton_step(g, H, theta, lower)
        if decrement < DECREMENT_TOL:
            converged = True
            break
        newton = step is not None and attempt + 1 < max_passes
        if newton:  # a backtracking Newton step, clipped to the bounds
            for t in 0.5 ** np.arange(20):
                if f(np.maximum(theta + t * step, lower)) < value:
                    break
            message = "Newton step from a finite-difference Hessian"
        else:
            theta = f.best_theta
    if converged:
        message = f"predicted further decrease {decrement:.2g} < {DECREMENT_TOL:g} ({message})"
    if fallback is not None and not np.array_equal(np.asarray(fallback, dtype=float), start):
        best = f.best_value
        if f(np.asarray(fallback, dtype=float)) < best - DECREMENT_TOL:
            theta2, info2 = optimize_theta(objective, fallback, lower, max_passes,
                                           gradient=gradient)
            info2["n_evaluations"] += f.count
            info2["n_gradients"] += f.n_gradients
            info2["message"] = ("restarted from the standard start, which was better than the "
                                f"optimum found from the given one; {info2['message']}")
            return theta2, info2
    # An element a hair above its bound 0 (where a search with gradients stops, 1e-8 say) is a
    # boundary estimate: put it on the bound when the criterion is no worse there.
    best = np.asarray(f.best_theta, dtype=float)
    near = (lower == 0) & (best > 0) & (best < SNAP_TO_BOUND)
    if near.any():
        snapped = np.where(near, 0.0, best)
        v = f(snapped)
        if v <= f.best_value + NOISE * 16 * max(1.0, abs(f.best_value)):
            f.best_theta, f.best_value = snapped, min(v, f.best_value)
    info = {
        "optimizer": "L-BFGS-B (scipy.optimize.minimize), "
        + ("analytic gradient (lmmlib.gradient)" if f.n_gradients else
           "finite-difference gradient")
        + (", after quasi-Newton steps from a given Hessian" if hessian is not None else ""),
        "n_evaluations": f.count,
        "n_gradients": f.n_gradients,
        "converged": converged,
        "message": message,
        "objective": float(f.best_value),
        "passes": passes,
        "decrement": float(decrement),
    }
    return np.asarray(f.best_theta, dtype=float), info
