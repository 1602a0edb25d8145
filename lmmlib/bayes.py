"""Bayesian linear mixed models: ``blmer``, the same model as ``lmer`` sampled with PyMC.

The model of :mod:`lmmlib.lmm` with priors on every parameter (Gelman and Hill 2007, ch. 13;
Gelman et al. 2013, BDA3, ch. 15; Bürkner 2017):

.. math::

    \\begin{aligned}
    y_i &\\sim \\mathcal N(\\mu_i, \\sigma^2), \\qquad
    \\mu_i = \\alpha + \\tilde x_i'\\beta + \\textstyle\\sum_k z_{ki}' b_{k, g_k(i)}, \\\\
    b_{kj} &= \\operatorname{diag}(\\tau_k)\\, L_k\\, u_{kj}, \\qquad u_{kj} \\sim \\mathcal N(0, I),
    \\qquad L_k L_k' = \\Omega_k \\sim \\operatorname{LKJ}(\\eta),
    \\end{aligned}

with :math:`\\tilde x_i` the fixed-effects predictors *centred* at their means (so
:math:`\\alpha` is the mean response at average predictors, as brms samples it), the random
effects written *non-centred* through standard-normal :math:`u` (Betancourt and Girolami 2015),
and for a term without correlations (``||``, or a single column) :math:`L_k = I`.  The
intercept on the original scale, ``(Intercept)`` = :math:`\\alpha - \\bar x'\\beta`, is what
:meth:`BayesianMixedModel.summary` reports, as lme4 and brms do.

The formula is parsed and the matrices built by :func:`lmmlib.design.build_design`, the code
``lmer`` uses, so a formula means the same thing to both and the parameter names agree: the
rows of :meth:`BayesianMixedModel.summary` are named as the rows of ``fit.confint()``.

Priors (:func:`prior_set`):

``"brms"``
    brms 2.18's defaults (``get_prior``; R/priors.R, ``def_scale_prior``): with
    :math:`m` = median(y) and :math:`s` = max(2.5, mad(y)), each rounded to one decimal
    (R's ``mad``, scaled by 1.4826), the centred intercept :math:`\\alpha \\sim t_3(m, s)`,
    flat (improper) coefficients, every group SD and :math:`\\sigma` half-:math:`t_3(0, s)`,
    and correlations LKJ(1) (uniform over correlation matrices).
``"weakly_informative"``
    scaled to the data; the intercept, coefficient and sigma priors are rstanarm's
    autoscaled defaults (Gabry and Goodrich 2020), the SD and correlation priors are not
    (rstanarm's default ``decov`` prior is LKJ(1) with a gamma prior on the scale):
    :math:`\\alpha \\sim \\mathcal N(\\bar y, 2.5\\, s_y)`,
    :math:`\\beta_j \\sim \\mathcal N(0, 2.5\\, s_y / s_{x_j})`, the SD of a term's column j
    half-:math:`\\mathcal N(0, s_y / \\mathrm{rms}(z_j))`, :math:`\\sigma \\sim
    \\operatorname{Exponential}(1 / s_y)` and correlations LKJ(2), where :math:`s` is a sample SD.

A dict overrides single priors of a set (the set is ``"brms"`` unless the dict has
``"set": "weakly_informative"``); its keys are ``"Intercept"`` (the centred intercept),
``"b"`` (every coefficient) or a coefficient's name, ``"sd"`` (every SD) or an SD's
summary name (``"sd_Days|Subject"``), ``"sigma"``, and ``"cor"`` or ``"cor|Subject"``; its
values are tuples such as ``("normal", mu, sd)``, ``("student_t", nu, mu, sd)``,
``("half_normal", sd)``, ``("half_student_t", nu, sd)``, ``("exponential", rate)``,
``("flat",)`` or, for correlations, ``("lkj", eta)``.

>>> from lmmlib import datasets
>>> prior_set("brms", datasets.sleepstudy()["Reaction"].to_numpy())["Intercept"]
('student_t', 3, 288.7, 59.3)
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import pandas as pd

from lmmlib.design import build_design
from lmmlib.errors import LmmInputError
from lmmlib.remat import group_labels, sdcor_names, theta_indices
from lmmlib.summary import percent_label

__all__ = ["blmer", "BayesianMixedModel", "build_model", "prior_predictive", "prior_set",
           "check_sampling",
           "SamplingWarning", "PRIOR_SETS", "mad"]

#: the named prior sets that :func:`prior_set` knows
PRIOR_SETS = ("brms", "weakly_informative")

_SCALAR_PRIORS = {"normal": 2, "student_t": 3, "half_normal": 1, "half_student_t": 2,
                  "exponential": 1, "flat": 0}
_POSITIVE_PRIORS = {"half_normal", "half_student_t", "exponential"}


def mad(x) -> float:
    """R's ``mad``: the median absolute deviation from the median times 1.4826.

    The constant makes it estimate the SD of normal data.  brms scales its default priors by it.

    >>> mad([1.0, 2.0, 3.0, 4.0, 100.0])
    1.4826
    """
    x = np.asarray(x, dtype=float)
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _r_round(value: float, digits: int = 1) -> float:
    """R's ``round``: the decimal nearest to the stored double (Python's ``round`` on a float)."""
    return float(round(float(value), digits))


def prior_set(name: str, y, X_centred=None, fixef_names=(), terms=()) -> dict:
    """The priors of a named set for response ``y`` (and predictors, for the scaled set).

    Returns a dict keyed as the overrides of :func:`blmer` (``"Intercept"``, ``"b"``,
    coefficient names, ``"sd"``, SD names, ``"sigma"``, ``"cor"``); see the module docstring
    for the formulas and their sources.

    >>> prior_set("brms", [250.0, 260.0, 300.0])["sd"]
    ('half_student_t', 3, 14.8)
    """
    y = np.asarray(y, dtype=float)
    if name == "brms":
        scale = max(2.5, _r_round(mad(y)))
        return {"Intercept": ("student_t", 3, _r_round(np.median(y)), scale), "b": ("flat",),
                "sd": ("half_student_t", 3, scale), "sigma": ("half_student_t", 3, scale),
                "cor": ("lkj", 1.0)}
    if name == "weakly_informative":
        s_y = float(np.std(y, ddof=1))
        priors = {"Intercept": ("normal", float(np.mean(y)), 2.5 * s_y),
                  "b": ("normal", 0.0, 2.5 * s_y), "sd": ("half_normal", s_y),
                  "sigma": ("exponential", 1.0 / s_y), "cor": ("lkj", 2.0)}
        if X_centred is not None:
            for j, coef in enumerate(fixef_names):
                s_x = float(np.std(X_centred[:, j], ddof=1))
                if s_x > 0:
                    priors[coef] = ("normal", 0.0, 2.5 * s_y / s_x)
        for term in terms:
            rms = np.sqrt(np.mean(term.X**2, axis=0))
            for name_j, r in zip(term.names, rms):
                if r > 0:
                    priors[f"sd_{name_j}|{term.group}"] = ("half_normal", s_y / r)
        return priors
    raise LmmInputError(f"unknown prior set {name!r}; choose one of {', '.join(PRIOR_SETS)} "
                        "or pass a dict of priors")


def _resolve_priors(priors, y, Xc, coef_names, terms) -> dict:
    """The prior of every parameter: a named set, possibly overridden by a dict."""
    overrides = {}
    if isinstance(priors, dict):
        overrides = dict(priors)
        name = overrides.pop("set", "brms")
    elif isinstance(priors, str):
        name = priors
    else:
        raise LmmInputError(
            f"priors must be the name of a prior set ({', '.join(PRIOR_SETS)}) or a dict, "
            f"got {type(priors).__name__}"
        )
    resolved = prior_set(name, y, Xc, coef_names, terms)
    labels = group_labels(terms)
    known = {"Intercept", "b", "sd", "sigma", "cor", *coef_names,
             *(f"sd_{n}|{t.group}" for t in terms for n in t.names),
             *(f"cor|{t.group}" for t in terms), *(f"cor|{lab}" for lab in labels)}
    for key, spec in overrides.items():
        if key not in known:
            raise LmmInputError(
                f"no parameter or class {key!r} to put a prior on; this model has: "
                f"{', '.join(sorted(known))}"
            )
        _check_spec(key, spec)
    resolved.update(overrides)
    return resolved


def _check_spec(key: str, spec) -> None:
    if not isinstance(spec, tuple) or not spec or not isinstance(spec[0], str):
        raise LmmInputError(
            f"the prior of {key!r} must be a tuple such as ('normal', 0, 10), got {spec!r}"
        )
    family, args = spec[0], spec[1:]
    if key.startswith("cor"):
        if family != "lkj" or len(args) != 1 or not args[0] > 0:
            raise LmmInputError(
                f"the prior of {key!r} must be ('lkj', eta) with eta > 0, got {spec!r}"
            )
        return
    if family not in _SCALAR_PRIORS:
        raise LmmInputError(
            f"unknown prior family {family!r} for {key!r}; use one of "
            f"{', '.join(_SCALAR_PRIORS)}"
        )
    if len(args) != _SCALAR_PRIORS[family]:
        raise LmmInputError(
            f"the prior {family!r} of {key!r} takes {_SCALAR_PRIORS[family]} numbers, "
            f"got {spec!r}"
        )
    positive = key == "sigma" or key.startswith("sd")
    if positive and family not in _POSITIVE_PRIORS | {"flat"}:
        raise LmmInputError(
            f"{key!r} is a standard deviation: give it a prior on positive numbers "
            f"(half_normal, half_student_t, exponential), got {family!r}"
        )
    if not positive and family in _POSITIVE_PRIORS:
        raise LmmInputError(f"{key!r} can be negative: a {family!r} prior does not fit it")


def _prior_for(resolved: dict, key: str, default_key: str):
    return resolved.get(key, resolved[default_key])


def _distribution(pm, spec, name=None, dims=None, shape=None, positive=False):
    """A PyMC random variable (``name`` given) or an unregistered ``.dist`` for ``spec``."""
    family, args = spec[0], [np.asarray(a, dtype=float) for a in spec[1:]]
    make = {
        "normal": lambda f: f(pm.Normal, mu=args[0], sigma=args[1]),
        "student_t": lambda f: f(pm.StudentT, nu=args[0], mu=args[1], sigma=args[2]),
        "half_normal": lambda f: f(pm.HalfNormal, sigma=args[0]),
        "half_student_t": lambda f: f(pm.HalfStudentT, nu=args[0], sigma=args[1]),
        "exponential": lambda f: f(pm.Exponential, lam=args[0]),
        "flat": lambda f: f(pm.HalfFlat if positive else pm.Flat),
    }[family]
    if name is None:
        return make(lambda cls, **kw: cls.dist(shape=shape, **kw))
    return make(lambda cls, **kw: cls(name, dims=dims, **kw))


def _stacked(specs):
    """One prior spec with vector arguments from several specs of the same family."""
    families = {s[0] for s in specs}
    if len(families) != 1:
        raise LmmInputError(
            "the SDs of one correlated term need priors of one family (with any parameters), "
            f"got {', '.join(sorted(families))}"
        )
    return (specs[0][0], *(np.array(column) for column in zip(*(s[1:] for s in specs))))


#: dimension names that ArviZ keeps for itself: a grouping factor of that name gets a "_"
_RESERVED_DIMS = {"chain", "draw", "sample"}


def _term_dims(terms) -> list[tuple[str, str, str]]:
    """Per term: its label (lme4's VarCorr label), the dim of its levels (the grouping factor's
    name) and the dim of its columns (``"<label>_effect"``)."""
    return [(label, term.group + ("_" if term.group in _RESERVED_DIMS else ""),
             f"{label}_effect") for label, term in zip(group_labels(terms), terms)]


def build_model(design, priors="brms", centred: bool = False):
    """The PyMC model of :mod:`lmmlib.bayes` for a :class:`lmmlib.design.Design`.

    Variables: ``Intercept`` (the intercept of the centred predictors), ``b`` (dim ``coef``),
    ``sigma``; per random-effects term with label ``L`` (``Subject``): ``z_L`` (standard
    normal, dims (levels, effects)), ``sd_L`` and, for a correlated term, ``chol_L`` (LKJ
    Cholesky factor of the covariance) and ``cor_L``; deterministic ``r_L`` (the random
    effects :math:`b_{kj}`) and ``beta`` (dim ``fixef``: the coefficients on the original scale).
    With ``centred=True`` the random effects ``r_L`` are sampled directly,
    :math:`b_{kj} \\sim \\mathcal N(0, \\operatorname{diag}(\\tau_k)\\Omega_k\\operatorname{diag}(\\tau_k))`
    (the *centred* parameterisation; there is no ``z_L``): the same model, a harder geometry.

    >>> from lmmlib import datasets
    >>> from lmmlib.design import build_design
    >>> model = build_model(build_design("Reaction ~ Days + (Days | Subject)",
    ...                                  datasets.sleepstudy()))
    >>> sorted(model.coords)[:3], list(model.coords["Subject_effect"])
    (['Subject', 'Subject_effect', 'Subject_effect_'], ['(Intercept)', 'Days'])
    """
    import pymc as pm
    import pytensor.tensor as pt

    X, y, names = design.X, design.y, list(design.fixef_names)
    intercept = "(Intercept)" in names and np.all(X[:, names.index("(Intercept)")] == 1.0)
    coef = [n for n in names if not (intercept and n == "(Intercept)")]
    Xb = X[:, [names.index(n) for n in coef]]
    means = Xb.mean(axis=0) if intercept else np.zeros(len(coef))
    Xc = Xb - means
    resolved = _resolve_priors(priors, y, Xc, coef, design.terms)

    coords = {"fixef": names, "coef": coef, "obs": np.arange(len(y))}
    dims = _term_dims(design.terms)
    for (label, level_dim, effect_dim), term in zip(dims, design.terms):
        coords[level_dim] = [str(v) for v in term.levels]
        coords[effect_dim] = list(term.names)
        if term.p > 1:  # a second dim for the rows and columns of a correlation matrix
            coords[effect_dim + "_"] = list(term.names)
    with pm.Model(coords=coords) as model:
        mu = pt.zeros(len(y))
        if coef:
            b_specs = [_prior_for(resolved, n, "b") for n in coef]
            if len({s for s in b_specs}) == 1:
                b = _distribution(pm, b_specs[0], "b", dims="coef")
            else:
                b = pt.stack([_distribution(pm, s, f"b_{n}") for s, n in zip(b_specs, coef)])
                b = pm.Deterministic("b", b, dims="coef")
            mu = mu + pt.dot(Xc, b)
        if intercept:
            alpha = _distribution(pm, resolved["Intercept"], "Intercept")
            mu = mu + alpha
        pieces = []
        for n in names:
            if intercept and n == "(Intercept)":
                pieces.append(alpha - (pt.dot(means, b) if coef else 0.0))
            else:
                pieces.append(b[coef.index(n)])
        pm.Deterministic("beta", pt.stack(pieces), dims="fixef")
        for (label, level_dim, effect_dim), term in zip(dims, design.terms):
            sd_specs = [_prior_for(resolved, f"sd_{n}|{term.group}", "sd") for n in term.names]
            if term.p > 1:  # lme4's terms with several columns are correlated
                eta = resolved.get(f"cor|{label}",
                                   resolved.get(f"cor|{term.group}", resolved["cor"]))[1]
                sd_dist = _distribution(pm, _stacked(sd_specs), shape=term.p, positive=True)
                chol, corr, sd = pm.LKJCholeskyCov(f"chol_{label}", n=term.p, eta=eta,
                                                   sd_dist=sd_dist, compute_corr=True)
                pm.Deterministic(f"sd_{label}", sd, dims=effect_dim)
                pm.Deterministic(f"cor_{label}", corr, dims=(effect_dim, effect_dim + "_"))
            else:
                sd = _distribution(pm, sd_specs[0], f"sd_{label}", dims=effect_dim,
                                   positive=True)
            if centred:
                if term.p > 1:
                    r = pm.MvNormal(f"r_{label}", mu=np.zeros(term.p), chol=chol,
                                    dims=(level_dim, effect_dim))
                else:
                    r = pm.Normal(f"r_{label}", 0.0, sd, dims=(level_dim, effect_dim))
            else:
                z = pm.Normal(f"z_{label}", 0.0, 1.0, dims=(level_dim, effect_dim))
                r = pt.dot(z, chol.T) if term.p > 1 else z * sd
                r = pm.Deterministic(f"r_{label}", r, dims=(level_dim, effect_dim))
            mu = mu + pt.sum(pt.as_tensor(term.X) * r[term.codes], axis=1)
        sigma = _distribution(pm, resolved["sigma"], "sigma", positive=True)
        pm.Normal("y", mu=mu, sigma=sigma, observed=y, dims="obs")
    model._lmmlib = {"intercept": intercept, "coef": coef, "means": means,
                     "priors": resolved, "dims": dims}
    return model


def _numba_pytensor():
    """PyTensor settings for every function that sampling compiles: the numba backend, and no
    C++ compiler.

    Why: PyTensor's C backend looks for a BLAS library to link its matrix products against,
    and a pip-installed numpy has none it can link (numpy's bundled OpenBLAS has renamed
    symbols), hence PyTensor's warning "could not link to a BLAS installation".  The numba
    backend calls BLAS through scipy and needs no C++ compiler (so it also runs where there is
    none, as on some Binder images).  PyMC compiles one small helper (the initial point) in
    PyTensor's FAST_COMPILE mode whatever mode is asked for; without a compiler that helper
    runs as Python code, which is what it is for.
    """
    import pytensor

    return pytensor.config.change_flags(cxx="", mode="NUMBA")


class SamplingWarning(UserWarning):
    """The sampler's diagnostics say that the draws may not represent the posterior:
    divergent transitions, R-hat above 1.01, or too few effective draws."""


@contextlib.contextmanager
def _quiet_pymc():
    """PyMC's log messages ("Initializing NUTS ...", "Sampling: [...]") silenced.

    They are information for an interactive session, written to stderr; :func:`blmer` checks
    the diagnostics itself and raises a :class:`SamplingWarning` that names the problem.
    """
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_sampling(fit: BayesianMixedModel) -> list[str]:
    """The problems that the diagnostics show, as sentences (empty: none).

    The rules of Vehtari et al. (2021): no divergent transitions after warm-up; rank-normalised
    R-hat below 1.01 for every parameter; bulk and tail ESS of at least 100 per chain.

    >>> from lmmlib import datasets
    >>> fit = blmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy(),
    ...             seed=1)  # doctest: +SKIP
    >>> check_sampling(fit)  # doctest: +SKIP
    []
    """
    problems = []
    if fit.divergences:
        problems.append(
            f"{fit.divergences} divergent transitions after warm-up: the sampler could not "
            "follow the posterior's geometry; raise target_accept or reparameterise"
        )
    table = fit.summary()
    chains = fit.draws().index.get_level_values("chain").nunique()
    high = table.index[table["r_hat"] > 1.01].tolist()
    if high:
        problems.append(f"R-hat above 1.01 for {', '.join(high)}: the chains disagree")
    low = table.index[table[["ess_bulk", "ess_tail"]].min(axis=1) < 100 * chains].tolist()
    if low:
        problems.append(f"fewer than {100 * chains} effective draws (100 per chain) for "
                        f"{', '.join(low)}: draw more")
    return problems


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LmmInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def blmer(formula: str, data: pd.DataFrame, priors="brms", draws: int = 1000,
          tune: int = 1000, chains: int = 4, seed=None, *, cores: int = 1,
          target_accept: float = 0.8, centred: bool = False) -> BayesianMixedModel:
    """Sample the posterior of a linear mixed model given in lme4's formula syntax.

    The model, its priors and their sources are in the docstring of :mod:`lmmlib.bayes`;
    the formula is read by the same code as :func:`lmmlib.lmm.lmer`.  Sampling is PyMC's NUTS
    (Hoffman and Gelman 2014) with the log density and its gradient compiled by numba.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    priors : str or dict
        ``"brms"`` (brms 2.18's defaults), ``"weakly_informative"``, or a dict of single
        priors that override a set (see :mod:`lmmlib.bayes`).
    draws, tune, chains : int
        Kept draws and warm-up (tuning) iterations per chain, and the number of chains.
        Four chains (the default) are what R-hat and the ESS need to judge convergence well
        (Vehtari et al. 2021).
    seed : int, optional
        Makes the draws reproducible (the same with any ``cores``).
    cores : int
        Chains run in parallel processes when > 1; one process (the default) compiles once
        and is the faster choice on a machine with one or two busy cores.
    target_accept : float
        NUTS's target acceptance rate; raise it (0.95, 0.99) when there are divergences.
    centred : bool
        Sample the random effects directly instead of through standard-normal ``z`` (to show
        why the non-centred default exists; see :func:`build_model`).

    Returns
    -------
    BayesianMixedModel
        with ``idata`` (an ArviZ 1.x ``DataTree``, the successor of ``InferenceData``: groups
        ``posterior``, ``sample_stats``, ``observed_data``) and :meth:`~BayesianMixedModel.summary`.

    Examples
    --------
    >>> from lmmlib import datasets
    >>> fit = blmer("Reaction ~ Days + (Days | Subject)", datasets.sleepstudy(),
    ...             draws=100, tune=100, chains=2, seed=1)  # doctest: +SKIP
    >>> fit.summary().loc["Days", "mean"]  # doctest: +SKIP
    10.4...
    """
    import pymc as pm

    draws = _check_count("draws", draws, 1)
    tune = _check_count("tune", tune, 0)
    chains = _check_count("chains", chains, 1)
    cores = _check_count("cores", cores, 1)
    if not 0 < target_accept < 1:
        raise LmmInputError(f"target_accept must be between 0 and 1, got {target_accept}")
    design = build_design(formula, data)
    model = build_model(design, priors, centred=centred)
    with _numba_pytensor(), _quiet_pymc():
        idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=cores, model=model,
                          random_seed=seed, target_accept=target_accept, progressbar=False,
                          compute_convergence_checks=False,  # check_sampling does them
                          compile_kwargs={"mode": "NUMBA"})
    fit = BayesianMixedModel(design, model, idata, seed=seed)
    problems = check_sampling(fit)
    if problems:
        warnings.warn("; ".join(problems), SamplingWarning, stacklevel=2)
    return fit


def prior_predictive(formula: str, data: pd.DataFrame, priors="weakly_informative",
                     draws: int = 500, seed=None) -> BayesianMixedModel:
    """Draws from the prior of :func:`blmer`'s model only, without sampling the posterior.

    For a prior predictive check (Gabry et al. 2019): simulate parameters from the prior and
    data from the model, and ask whether they look like possible data.  Returns a
    :class:`BayesianMixedModel` whose ``idata`` holds the groups ``prior`` and
    ``prior_predictive``; use ``draws(group="prior")`` and
    ``predictive(..., group="prior")``.  A flat prior has no draws (an error says which).

    >>> from lmmlib import datasets
    >>> check = prior_predictive("Reaction ~ Days + (Days | Subject)",
    ...                          datasets.sleepstudy(), seed=1)  # doctest: +SKIP
    >>> check.draws("prior").shape  # doctest: +SKIP
    (500, 6)
    """
    import xarray as xr

    design = build_design(formula, data)
    fit = BayesianMixedModel(design, build_model(design, priors), xr.DataTree(), seed=seed)
    fit.sample_prior(draws, seed=seed)
    return fit


class BayesianMixedModel:
    """The posterior of a linear mixed model sampled by :func:`blmer`.

    Attributes
    ----------
    design : lmmlib.design.Design
    model : pymc.Model
    idata : xarray.DataTree
        ArviZ's container of the draws (``posterior``, ``sample_stats``, ...).
    priors : dict
        The prior of every parameter class and override, as used.
    """

    def __init__(self, design, model, idata, seed=None):
        self.design = design
        self.model = model
        self.idata = idata
        self.priors = model._lmmlib["priors"]
        self.terms = list(design.terms)
        self.fixef_names = list(design.fixef_names)
        self.seed = seed

    @property
    def parameter_names(self) -> list[str]:
        """The names of ``fit.confint()``: SDs and correlations, ``sigma``, coefficients."""
        return [*sdcor_names(self.terms), "sigma", *self.fixef_names]

    def draws(self, group: str = "posterior") -> pd.DataFrame:
        """Draws of every parameter, one column each, named as ``fit.confint()``'s rows.

        Rows are indexed by (chain, draw).  The intercept is on the original scale of the
        predictors, ``(Intercept)`` = ``Intercept - mean(x)' b``.  ``group="prior"`` gives
        the draws of :meth:`sample_prior` (after it was called).
        """
        tree = self._group(group)
        columns = {}
        for (label, _, effect_dim), term in zip(self.model._lmmlib["dims"], self.terms):
            sd = tree[f"sd_{label}"]
            for r, c in zip(*theta_indices(term.p)):
                if r == c:
                    name = f"sd_{term.names[r]}|{term.group}"
                    columns[name] = sd.isel({effect_dim: r})
                else:
                    name = f"cor_{term.names[r]}.{term.names[c]}|{term.group}"
                    columns[name] = tree[f"cor_{label}"].isel({effect_dim: r,
                                                               effect_dim + "_": c})
        columns["sigma"] = tree["sigma"]
        for j, name in enumerate(self.fixef_names):
            columns[name] = tree["beta"].isel(fixef=j)
        frame = pd.DataFrame({name: np.asarray(v).reshape(-1) for name, v in columns.items()})
        shape = np.asarray(tree["sigma"]).shape
        frame.index = pd.MultiIndex.from_product([range(shape[0]), range(shape[1])],
                                                 names=["chain", "draw"])
        return frame[self.parameter_names]

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """Posterior mean, SD, equal-tailed credible interval, R-hat, bulk and tail ESS.

        Rows are named and ordered as ``lmer(...).confint()``, so that the two tables (and a
        bootstrap's) line up without renaming.  R-hat is the rank-normalised split R-hat and
        the ESS are bulk and tail ESS of Vehtari et al. (2021), computed by ArviZ.
        """
        import arviz as az
        import xarray as xr

        if not 0 < level < 1:
            raise LmmInputError(f"level must be between 0 and 1, got {level}")
        frame = self.draws()
        chains = frame.index.get_level_values("chain").nunique()
        values = frame.to_numpy().reshape(chains, -1, frame.shape[1])
        data = xr.Dataset({"x": (("chain", "draw", "parameter"), values)},
                          coords={"parameter": frame.columns})
        lo, hi = 0.5 - level / 2, 0.5 + level / 2
        out = pd.DataFrame({
            "mean": frame.mean(), "sd": frame.std(ddof=1),
            percent_label(lo): frame.quantile(lo), percent_label(hi): frame.quantile(hi),
        })
        if chains > 1:
            out["r_hat"] = az.rhat(data)["x"].to_numpy()
        else:
            out["r_hat"] = np.nan  # R-hat compares chains; with one chain it is not defined
        out["ess_bulk"] = az.ess(data, method="bulk")["x"].to_numpy()
        out["ess_tail"] = az.ess(data, method="tail")["x"].to_numpy()
        return out

    @property
    def divergences(self) -> int:
        """Number of divergent transitions after warm-up (0 for a trustworthy sample)."""
        return int(np.asarray(self.idata["sample_stats"]["diverging"]).sum())

    def _group(self, group: str):
        if group not in self.idata.children:
            hint = " (call sample_prior first)" if group == "prior" else ""
            raise LmmInputError(f"this fit has no {group!r} draws{hint}")
        return self.idata[group]

    def sample_prior(self, draws: int = 500, seed=None):
        """Draw from the prior (and the prior predictive distribution of y); adds the groups
        ``prior`` and ``prior_predictive`` to :attr:`idata` and returns it.

        A flat prior (brms's default for coefficients) is improper: it has no draws, so this
        raises an error naming the parameter; give it a proper prior (e.g. with
        ``priors="weakly_informative"``).
        """
        import pymc as pm

        draws = _check_count("draws", draws, 1)
        flat = [v.name for v in self.model.free_RVs
                if v.owner.op.__class__.__name__ in ("FlatRV", "HalfFlatRV")]
        if flat:
            raise LmmInputError(
                f"the prior of {', '.join(flat)} is flat (improper): it has no prior "
                "predictive distribution; give it a proper prior, e.g. "
                "priors='weakly_informative' or priors={'b': ('normal', 0, 10)}"
            )
        with _numba_pytensor(), _quiet_pymc():
            prior = pm.sample_prior_predictive(draws=draws, model=self.model,
                                               random_seed=seed,
                                               compile_kwargs={"mode": "NUMBA"})
        for group in ("prior", "prior_predictive"):
            self.idata[group] = prior[group]
        return self.idata

    def predictive(self, newdata: pd.DataFrame | None = None, group: str = "posterior",
                   re: bool = True, observed: bool = False, seed=None) -> pd.DataFrame:
        """Draws of the regression line(s) at ``newdata`` (default: the fitted rows).

        Each draw is :math:`x'\\\\beta` (``re=False``: the population line) or
        :math:`x'\\\\beta + z'b_j` (``re=True``: each group's own line) at one draw of the
        parameters from the posterior (``group="posterior"``) or the prior (``"prior"``,
        after :meth:`sample_prior`).  ``observed=True`` adds a residual
        :math:`\\\\varepsilon \\\\sim \\\\mathcal N(0, \\\\sigma^2)` to each, so the draws are of new
        observations (the posterior or prior *predictive* distribution) rather than of the
        mean.  Returns a DataFrame with one row per draw and one column per row of
        ``newdata``.  A group level not in the fitted data is an error.
        """
        tree = self._group(group)
        if newdata is None:
            X, random, index = self.design.X, [(t.codes, t.X) for t in self.terms], \
                self.design.row_index
        else:
            if not isinstance(newdata, pd.DataFrame):
                raise LmmInputError(
                    f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
            X = self.design.new_fixed_matrix(newdata)
            random = self.design.new_random_terms(newdata) if re else []
            index = newdata.index
        beta = np.asarray(tree["beta"]).reshape(-1, X.shape[1])
        mu = beta @ X.T
        if re:
            for (label, _, _), term, (codes, Xk) in zip(self.model._lmmlib["dims"],
                                                        self.terms, random):
                if np.any(codes < 0):
                    raise LmmInputError(
                        f"newdata has a level of {term.group!r} that is not in the fitted "
                        "data; use re=False for the population line"
                    )
                r = np.asarray(tree[f"r_{label}"]).reshape(-1, term.nlevels, term.p)
                mu = mu + np.einsum("ia,sia->si", Xk, r[:, codes, :])
        if observed:
            sigma = np.asarray(tree["sigma"]).reshape(-1, 1)
            mu = mu + np.random.default_rng(seed).standard_normal(mu.shape) * sigma
        return pd.DataFrame(mu, columns=index)

    def __repr__(self) -> str:
        if "posterior" not in self.idata.children:
            return f"<BayesianMixedModel {self.design.formula!r}, prior draws only>"
        shape = np.asarray(self.idata["posterior"]["sigma"]).shape
        return (f"<BayesianMixedModel {self.design.formula!r}, {shape[0]} chains x "
                f"{shape[1]} draws>")

