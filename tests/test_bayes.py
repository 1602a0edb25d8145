"""lmmlib.blmer: brms's default priors, brms's posterior for sleepstudy, recovery of simulated
truth, names shared with lmer, the term types of lme4's formulas, errors and reproducibility.

Sampling runs are small (CI-sized) and seeded; each compiles its model once (a few seconds).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmlib
from lmmlib import datasets
from lmmlib.bayes import SamplingWarning, blmer, build_model, mad, prior_set
from lmmlib.design import build_design
from lmmlib.errors import FormulaError, LmmInputError, SingularFitWarning

SLOPES = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def brms_run(sleep):
    """The brms comparison run, CI-sized: 4 chains of 500 draws after 500 warm-up."""
    return blmer(SLOPES, sleep, priors="brms", draws=500, tune=500, chains=4, seed=2018)


# --------------------------------------------------------------------------- priors


def test_brms_default_priors_for_sleepstudy(sleep):
    """brms 2.18's rule (R/priors.R, def_scale_prior): location round(median(y), 1), scale
    max(2.5, round(mad(y), 1)); for sleepstudy brms's get_prior prints
    student_t(3, 288.7, 59.3) for the Intercept and student_t(3, 0, 59.3) for sd and sigma."""
    y = sleep["Reaction"].to_numpy()
    assert np.median(y) == pytest.approx(288.6508, abs=1e-4)
    assert mad(y) == pytest.approx(59.33929, abs=1e-5)  # R: mad(sleepstudy$Reaction)
    priors = prior_set("brms", y)
    assert priors == {
        "Intercept": ("student_t", 3, 288.7, 59.3),
        "b": ("flat",),
        "sd": ("half_student_t", 3, 59.3),
        "sigma": ("half_student_t", 3, 59.3),
        "cor": ("lkj", 1.0),
    }
    ref = datasets.reference("brms_sleepstudy")["priors"]
    assert ref["Intercept"] == "student_t(3, 288.7, 59.3)"
    assert ref["sd"].startswith("student_t(3, 0, 59.3)")


def test_brms_scale_has_floor_of_2_5():
    """brms uses max(2.5, mad(y)): a response with tiny spread gets scale 2.5."""
    assert prior_set("brms", [1.0, 1.01, 1.02, 1.03])["sd"] == ("half_student_t", 3, 2.5)


def test_brms_model_centres_predictors_and_uses_flat_coefficients(sleep):
    model = build_model(build_design(SLOPES, sleep), "brms")
    kinds = {v.name: v.owner.op.__class__.__name__ for v in model.free_RVs}
    assert kinds["b"] == "FlatRV"
    assert kinds["Intercept"] == "StudentTRV"
    assert kinds["sigma"] == "HalfStudentTRV"
    assert kinds["chol_Subject"].startswith("_LKJCholeskyCov")
    assert model._lmmlib["means"] == pytest.approx([4.5])  # mean of Days
    # the log density at a point: the centred intercept's prior is t_3(288.7, 59.3)
    from scipy import stats

    with lmmlib.bayes._numba_pytensor():
        point = model.initial_point()
        logp = model.compile_logp(vars=[model["Intercept"]], sum=True)
    point["Intercept"] = np.array(300.0)
    assert logp(point) == pytest.approx(stats.t.logpdf(300.0, 3, 288.7, 59.3))


def test_weakly_informative_priors_scale_with_the_data(sleep):
    design = build_design(SLOPES, sleep)
    model = build_model(design, "weakly_informative")
    priors = model._lmmlib["priors"]
    s_y = sleep["Reaction"].std()
    assert priors["Intercept"] == ("normal", pytest.approx(sleep["Reaction"].mean()),
                                   pytest.approx(2.5 * s_y))
    assert priors["Days"][2] == pytest.approx(2.5 * s_y / sleep["Days"].std())
    assert priors["sd_Days|Subject"][1] == pytest.approx(s_y / np.sqrt(np.mean(
        sleep["Days"] ** 2)))
    assert priors["sigma"] == ("exponential", pytest.approx(1 / s_y))


def test_a_single_prior_can_be_overridden(sleep):
    model = build_model(build_design(SLOPES, sleep),
                        {"sd_Days|Subject": ("half_student_t", 3, 5.0), "sigma": ("exponential",
                                                                                  0.1)})
    priors = model._lmmlib["priors"]
    assert priors["sd_Days|Subject"] == ("half_student_t", 3, 5.0)
    assert priors["sd"] == ("half_student_t", 3, 59.3)  # the rest stays brms's
    assert model["sigma"].owner.op.__class__.__name__ == "ExponentialRV"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"formula": "Reaction ~ Days + (Days | )"}, FormulaError, "no grouping factor"),
        ({"formula": "Reaction ~ Days"}, FormulaError, "no random-effects term"),
        ({"priors": "flat"}, LmmInputError, "unknown prior set 'flat'"),
        ({"priors": 3}, LmmInputError, "priors must be"),
        ({"priors": {"sd_Hours|Subject": ("half_normal", 1)}}, LmmInputError,
         "no parameter or class 'sd_Hours|Subject'"),
        ({"priors": {"sigma": ("normal", 0, 1)}}, LmmInputError, "standard deviation"),
        ({"priors": {"b": ("cauchy", 0, 1)}}, LmmInputError, "unknown prior family"),
        ({"priors": {"cor": ("lkj", -1)}}, LmmInputError, "eta > 0"),
        ({"draws": 0}, LmmInputError, "draws must be an integer >= 1"),
        ({"draws": 2.5}, LmmInputError, "draws must be"),
        ({"chains": 0}, LmmInputError, "chains must be"),
        ({"target_accept": 1.5}, LmmInputError, "target_accept"),
    ],
)
def test_bad_input_is_named(sleep, kwargs, error, match):
    args = {"formula": SLOPES, "data": sleep, **kwargs}
    with pytest.raises(error, match=match):
        blmer(**args)


def test_a_flat_prior_has_no_prior_predictive(brms_run):
    with pytest.raises(LmmInputError, match="flat"):
        brms_run.sample_prior(10)


# --------------------------------------------------------------------------- against brms


def test_posterior_agrees_with_brms(brms_run):
    """Issue 9: posterior means within Monte Carlo error plus a tenth of brms's posterior SD.

    Monte Carlo error: 3 standard errors of the difference of the two means, each
    sd / sqrt(ESS) (brms's ESS at least its smallest bulk ESS, 483)."""
    ref = datasets.reference("brms_sleepstudy")
    table = brms_run.summary()
    for name, value in ref["posterior"].items():
        ours = table.loc[name]
        mcse = np.hypot(ours["sd"] / np.sqrt(ours["ess_bulk"]),
                        value["sd"] / np.sqrt(ref["smallest_bulk_ess"]))
        assert abs(ours["mean"] - value["mean"]) <= 3 * mcse + 0.1 * value["sd"], name
        # the posterior SDs agree too, to a fifth (the SD of an SD estimate is larger)
        assert ours["sd"] == pytest.approx(value["sd"], rel=0.2), name


def test_diagnostics_of_the_brms_run(brms_run):
    table = brms_run.summary()
    assert brms_run.divergences == 0
    assert (table["r_hat"] < 1.01).all()
    assert (table["ess_bulk"] > 400).all() and (table["ess_tail"] > 400).all()


def test_summary_is_indexed_like_confint(brms_run, sleep):
    fit = lmmlib.lmer(SLOPES, sleep)
    table = brms_run.summary()
    assert list(table.index) == list(fit.confint().index)
    assert list(table.columns) == ["mean", "sd", "2.5 %", "97.5 %", "r_hat", "ess_bulk",
                                   "ess_tail"]
    draws = brms_run.draws()
    assert draws.shape == (2000, 6)
    assert table.loc["Days", "2.5 %"] == pytest.approx(draws["Days"].quantile(0.025))


def test_intercept_is_reported_on_the_original_scale(brms_run):
    """(Intercept) = Intercept (centred) - mean(Days) * b, draw by draw."""
    post = brms_run.idata["posterior"]
    alpha = np.asarray(post["Intercept"]).ravel()
    b = np.asarray(post["b"]).ravel()
    assert brms_run.draws()["(Intercept)"].to_numpy() == pytest.approx(alpha - 4.5 * b)


def test_named_coordinates(brms_run, sleep):
    post = brms_run.idata["posterior"]
    assert list(post["r_Subject"].coords["Subject"].values) == list(
        sleep["Subject"].cat.categories)
    assert list(post["r_Subject"].coords["Subject_effect"].values) == ["(Intercept)", "Days"]
    assert list(post["beta"].coords["fixef"].values) == ["(Intercept)", "Days"]


def test_subject_lines_are_close_to_lmer(brms_run, sleep):
    """The posterior mean of each subject's line is near lmer's prediction (BLUP): the data
    dominate the prior. Within a fifth of sigma at every observation."""
    fit = lmmlib.lmer(SLOPES, sleep)
    lines = brms_run.predictive()
    assert lines.shape == (2000, 180)
    assert np.max(np.abs(lines.mean().to_numpy() - fit.fitted.to_numpy())) < 0.2 * fit.sigma
    population = brms_run.predictive(pd.DataFrame({"Days": [0, 9]}), re=False)
    beta = brms_run.draws()[["(Intercept)", "Days"]].to_numpy()
    assert population.to_numpy() == pytest.approx(beta @ np.array([[1, 1], [0, 9]]))


def test_posterior_predictive_adds_residual_noise(brms_run):
    lines = brms_run.predictive(pd.DataFrame({"Days": [5]}), re=False)
    new = brms_run.predictive(pd.DataFrame({"Days": [5]}), re=False, observed=True, seed=1)
    sigma = brms_run.draws()["sigma"]
    # Var(new) = Var(line) + E(sigma^2): within 10 % for 2,000 draws
    assert new.var().iloc[0] == pytest.approx(lines.var().iloc[0] + (sigma**2).mean(),
                                              rel=0.1)


def test_new_level_is_an_error(brms_run):
    with pytest.raises(LmmInputError, match="not in the fitted data"):
        brms_run.predictive(pd.DataFrame({"Days": [1], "Subject": ["999"]}))


# --------------------------------------------------------------------------- simulated truth


def _simulate(rng, k=30, m=6, beta=(10.0, 2.0), sd=(2.0, 1.0), cor=0.3, sigma=2.0):
    cov = np.array([[sd[0] ** 2, cor * sd[0] * sd[1]], [cor * sd[0] * sd[1], sd[1] ** 2]])
    b = rng.multivariate_normal([0, 0], cov, size=k)
    g = np.repeat(np.arange(k), m)
    x = np.tile(np.linspace(-1, 1, m), k)
    y = beta[0] + b[g, 0] + (beta[1] + b[g, 1]) * x + rng.normal(0, sigma, k * m)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{j:02d}" for j in g]})


def test_recovers_simulated_parameters():
    rng = np.random.default_rng(11)
    data = _simulate(rng)
    fit = blmer("y ~ x + (x | g)", data, priors="weakly_informative", draws=500, tune=500,
                chains=4, seed=3)
    table = fit.summary()
    truth = {"(Intercept)": 10.0, "x": 2.0, "sd_(Intercept)|g": 2.0, "sd_x|g": 1.0,
             "cor_x.(Intercept)|g": 0.3, "sigma": 2.0}
    inside = [table.loc[n, "2.5 %"] <= v <= table.loc[n, "97.5 %"] for n, v in truth.items()]
    assert all(inside), table
    # and the posterior mean of sigma, the best-determined variance parameter, is close
    assert table.loc["sigma", "mean"] == pytest.approx(2.0, abs=0.3)
    assert fit.divergences == 0 and (table["r_hat"] < 1.02).all()


# --------------------------------------------------------------------------- term types


def _tiny(formula, data, **kwargs):
    """A short run that only has to build and sample (its diagnostics are not the point)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return blmer(formula, data, draws=60, tune=60, chains=1, seed=5, **kwargs)


def _lmer_names(formula, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return list(lmmlib.lmer(formula, data).confint().index)


def test_uncorrelated_terms(sleep):
    formula = "Reaction ~ Days + (Days || Subject)"
    fit = _tiny(formula, sleep)
    assert list(fit.summary().index) == _lmer_names(formula, sleep)
    post = fit.idata["posterior"]
    assert "chol_Subject" not in post and "r_Subject.1" in post  # two independent terms
    assert list(post["r_Subject.1"].coords["Subject.1_effect"].values) == ["Days"]


def test_crossed_terms():
    rng = np.random.default_rng(7)
    a, b = np.repeat(np.arange(8), 6), np.tile(np.arange(6), 8)
    y = 5 + rng.normal(0, 1, 8)[a] + rng.normal(0, 0.5, 6)[b] + rng.normal(0, 0.3, 48)
    data = pd.DataFrame({"y": y, "plate": [f"p{i}" for i in a],
                         "sample": [f"s{i}" for i in b]})
    formula = "y ~ 1 + (1 | plate) + (1 | sample)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # not ArviZ's about a dim named 'sample'
        warnings.simplefilter("ignore", SamplingWarning)
        fit = blmer(formula, data, draws=60, tune=60, chains=1, seed=5)
        assert list(fit.summary().index) == _lmer_names(formula, data)
    assert list(fit.idata["posterior"]["r_sample"].coords["sample_"].values)[:2] == ["s0", "s1"]
    lines = fit.predictive()
    assert lines.shape == (60, 48) and np.isfinite(lines.to_numpy()).all()


def test_nested_terms():
    rng = np.random.default_rng(8)
    batch = np.repeat(np.arange(5), 12)
    cask = np.tile(np.repeat(np.arange(3), 4), 5)
    y = rng.normal(0, 1, 5)[batch] + rng.normal(0, 1, 15)[batch * 3 + cask] \
        + rng.normal(0, 0.5, 60)
    data = pd.DataFrame({"y": y, "batch": batch.astype(str), "cask": cask.astype(str)})
    formula = "y ~ 1 + (1 | batch/cask)"
    fit = _tiny(formula, data)
    assert list(fit.summary().index) == _lmer_names(formula, data)
    post = fit.idata["posterior"]
    assert post["r_cask:batch"].shape[-2] == 15
    assert "1:0" in list(post["r_cask:batch"].coords["cask:batch"].values)


def test_same_seed_same_draws(sleep):
    first = _tiny("Reaction ~ Days + (1 | Subject)", sleep)
    second = _tiny("Reaction ~ Days + (1 | Subject)", sleep)
    pd.testing.assert_frame_equal(first.draws(), second.draws())


def test_prior_predictive_lines(sleep):
    fit = _tiny("Reaction ~ Days + (Days | Subject)", sleep, priors="weakly_informative")
    fit.sample_prior(200, seed=1)
    lines = fit.predictive(pd.DataFrame({"Days": [0.0, 9.0]}), group="prior", re=False)
    prior = fit.draws("prior")
    assert lines.shape == (200, 2)
    # the prior of the intercept is N(mean(y), 2.5 sd(y)) on centred Days (mean 4.5)
    s_y = sleep["Reaction"].std()
    centre = lines.to_numpy() @ np.array([0.5, 0.5])  # the line at Days = 4.5
    assert centre.mean() == pytest.approx(sleep["Reaction"].mean(), abs=4 * 2.5 * s_y / 14)
    assert centre.std() == pytest.approx(2.5 * s_y, rel=0.2)
    assert list(prior.columns) == list(fit.summary().index)


def test_prior_predictive_without_posterior(sleep):
    check = lmmlib.bayes.prior_predictive(SLOPES, sleep, draws=50, seed=4)
    assert "posterior" not in check.idata.children
    assert check.draws("prior").shape == (50, 6)
    assert "prior draws only" in repr(check)
    with pytest.raises(LmmInputError, match="flat"):
        lmmlib.bayes.prior_predictive(SLOPES, sleep, priors="brms", draws=10)
