"""lmmlib.bootstrap: lme4's bootMer numbers, the batched path against refit, seeds, the
cluster bootstrap against the true sampling SD, band helpers and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lmmlib
from lmmlib import datasets, lmer
from lmmlib.batch import BatchedProblems
from lmmlib.bootstrap import BootstrapResult, BootstrapWarning, bootstrap
from lmmlib.errors import LmmInputError, SingularFitWarning

FORMULA = "Reaction ~ Days + (Days | Subject)"
#: lme4's bootMer(fm1, fixef, nsim = 1000) on sleepstudy (issue 8): percentile limits and the
#: SDs of the replicates
_REF = datasets.reference("lme4_bootmer_sleepstudy")
LME4_BOOTMER = {name: (ci["2.5 %"], ci["97.5 %"], _REF["sd"][name])
                for name, ci in _REF["percentile_95"].items()}


@pytest.fixture(scope="module")
def fit(sleep):
    return lmer(FORMULA, sleep)


@pytest.fixture(scope="module")
def boot1000(fit):
    return bootstrap(fit, n=1000, kind="parametric", seed=20261201)


def test_public_api_is_exported():
    assert lmmlib.bootstrap is bootstrap
    assert "bootstrap" in lmmlib.__all__


# ------------------------------------------------------------------ lme4's bootMer
@pytest.mark.parametrize("name", ["(Intercept)", "Days"])
def test_parametric_percentiles_agree_with_lme4_bootmer(boot1000, name):
    """Two independent sets of 1,000 replicates: each limit and SD differs by Monte Carlo error.

    The MC standard error of a p-quantile of B replicates is sqrt(p(1-p)/B) / f(q_p), with f
    the density of the replicates (here near normal); that of an SD is about SD/sqrt(2(B-1)).
    The difference of two independent estimates has sqrt(2) times that; we allow 4 of those.
    """
    lo_lme4, hi_lme4, sd_lme4 = LME4_BOOTMER[name]
    B = boot1000.n
    t = boot1000.table[name]
    sd = t.std(ddof=1)
    ci = boot1000.confint("percentile", level=0.95).loc[name]
    for p, ours, theirs in [(0.025, ci["2.5 %"], lo_lme4), (0.975, ci["97.5 %"], hi_lme4)]:
        density = stats.norm.pdf(stats.norm.ppf(p)) / sd
        mcse = np.sqrt(p * (1 - p) / B) / density
        assert abs(ours - theirs) < 4 * np.sqrt(2) * mcse, (name, p, ours, theirs, mcse)
    assert abs(sd - sd_lme4) < 4 * np.sqrt(2) * sd / np.sqrt(2 * (B - 1))


def test_parametric_bootstrap_sd_matches_the_fit_standard_errors(boot1000, fit):
    # the model is fitted to data drawn from itself: bootstrap SE ~ the Wald SE (within 10%)
    ratio = boot1000.std[fit.fixef_names] / fit.se
    assert np.all(np.abs(ratio - 1) < 0.1), ratio


def test_counts_and_status(boot1000):
    counts = boot1000.counts
    assert counts["replicates"] == 1000
    assert counts["failed"] == 0
    assert counts["singular"] == int(boot1000.status["singular"].sum())
    assert set(boot1000.status["path"]) <= {"batched", "refit"}
    assert len(boot1000.table) == 1000 and boot1000.table.index[0] == 1
    assert "replicates" in repr(boot1000)


def test_default_statistic_has_the_rows_of_confint(boot1000, fit):
    assert list(boot1000.table.columns) == list(fit.confint().index)
    assert list(boot1000.confint("basic").columns) == list(fit.confint().columns)


# ------------------------------------------------------------------ batched path == refit
def _engine_table(boot):
    """The same replicates refitted one by one by the engine."""
    return bootstrap(boot.fit, n=boot.n, kind=boot.kind, seed=boot.seed, batched=False)


@pytest.mark.parametrize("kind", ["parametric", "residual", "cluster", "subsample"])
def test_batched_path_gives_the_engine_estimates(fit, kind):
    fast = bootstrap(fit, n=60, kind=kind, seed=5)
    slow = _engine_table(fast)
    assert (fast.status["path"] == "batched").sum() > 30
    assert (slow.status["path"] == "refit").all()
    # the same criterion, minimised: never worse than the engine's optimum
    gain = slow.status["criterion"] - fast.status["criterion"]
    assert np.all(gain > -1e-8), gain.min()
    # where both find the same optimum, the same estimates: fixed effects to 1e-5, SDs,
    # correlation and sigma as close as the engine's own convergence test allows (a Newton
    # decrement < 1e-8, i.e. about 1e-4 standard errors).  A replicate where the batched
    # search found a lower criterion (the engine stopped at a worse point on the boundary,
    # seen for a few subsamples) is excluded, and there must be few of them.
    same = (gain < 1e-6).to_numpy()
    assert same.sum() >= len(same) - 2
    names = fit.fixef_names
    np.testing.assert_allclose(fast.table[names][same], slow.table[names][same], rtol=1e-5,
                               atol=1e-4)
    diff = (fast.table[same] - slow.table[same]).abs().max() / slow.table.std()
    assert diff.max() < 1e-3, diff
    pd.testing.assert_frame_equal(fast.status[["failed"]], slow.status[["failed"]])


def test_batched_criterion_is_the_engine_criterion(fit):
    """At the same theta, the batched criterion equals LinearMixedModel.objective (1e-10)."""
    Y = fit.simulate(4, seed=3).to_numpy()
    problems = BatchedProblems.responses(fit, Y)
    rng = np.random.default_rng(0)
    theta = fit.theta * (1 + 0.3 * rng.standard_normal((4, 3)))
    theta[:, [0, 2]] = np.abs(theta[:, [0, 2]])
    values = problems.evaluate(theta * fit.pls.theta_scale, np.arange(4), reml=True)
    for b in range(4):
        engine = fit.refit(Y[:, b]).objective(theta[b])
        assert values[b] == pytest.approx(engine, rel=1e-12)
    ml = problems.evaluate(theta * fit.pls.theta_scale, np.arange(4), reml=False)
    assert ml[0] == pytest.approx(fit.refit(Y[:, 0], reml=False).objective(theta[0]), rel=1e-12)


def test_batched_optimum_is_no_worse_than_refit(fit):
    Y = fit.simulate(50, seed=8).to_numpy()
    out = BatchedProblems.responses(fit, Y).minimize(fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        refits = [fit.refit(Y[:, b]) for b in range(50)]
    ok = out["ok"]
    assert ok.sum() >= 45
    deviance = np.array([r.deviance for r in refits])[ok]
    # both minimise the same criterion; the batched Newton stops later (decrement 1e-10)
    assert np.all(out["criterion"][ok] <= deviance + 1e-9)
    assert np.all(deviance - out["criterion"][ok] < 1e-7)
    beta = np.array([r.fixef for r in refits])[ok]
    np.testing.assert_allclose(out["beta"][ok], beta, rtol=1e-8)


def test_batched_ml_fit(sleep):
    fit_ml = lmer(FORMULA, sleep, reml=False)
    fast = bootstrap(fit_ml, n=30, seed=2)
    slow = bootstrap(fit_ml, n=30, seed=2, batched=False)
    np.testing.assert_allclose(fast.table, slow.table, rtol=1e-4, atol=1e-3)


def test_models_without_a_batched_path_are_refitted(sleep):
    fit2 = lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleep)
    boot = bootstrap(fit2, n=5, seed=1)
    assert (boot.status["path"] == "refit").all()
    assert list(boot.table.columns) == list(fit2.confint().index)


# ------------------------------------------------------------------ reproducibility
def test_the_same_seed_gives_the_same_table_bit_for_bit(fit):
    for kind in ["parametric", "cluster", "subsample", "residual"]:
        a = bootstrap(fit, n=20, kind=kind, seed=123)
        b = bootstrap(fit, n=20, kind=kind, seed=123)
        pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
        c = bootstrap(fit, n=20, kind=kind, seed=124)
        assert not np.allclose(a.table, c.table)


def test_a_missing_seed_is_recorded_and_reproduces(fit):
    a = bootstrap(fit, n=10)
    b = bootstrap(fit, n=10, seed=a.seed)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)


# ------------------------------------------------------------------ the schemes
def test_cluster_copies_of_a_subject_are_distinct_groups(fit):
    boot = bootstrap(fit, n=3, kind="cluster", seed=4)
    rep = boot._replicates
    draws = rep.draws[0]
    design = rep.cluster_design(0)
    term = design.terms[0]
    assert term.nlevels == len(draws) == 18
    assert len(np.unique(draws)) < 18  # some subject is drawn twice (seeded)
    assert any("#2" in str(level) for level in term.levels)
    assert len(design.y) == 10 * 18


def _simulated_groups(rng, groups=40, per=8, beta=(1.0, 0.5), sd=(1.0, 0.3), sigma=0.8):
    x = np.tile(np.arange(per, dtype=float), groups)
    g = np.repeat(np.arange(groups), per)
    b0 = rng.normal(0, sd[0], groups)
    b1 = rng.normal(0, sd[1], groups)
    y = beta[0] + b0[g] + (beta[1] + b1[g]) * x + rng.normal(0, sigma, len(x))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g]})


def _true_sd_of_slope(data, sd=(1.0, 0.3), sigma=0.8):
    """sqrt of the (2,2) element of (X'V^{-1}X)^{-1} at the true parameters: the exact
    sampling SD of the GLS estimate (REML's is that to first order)."""
    information = np.zeros((2, 2))
    D = np.diag(np.square(sd))
    for _, rows in data.groupby("g"):
        Xi = np.column_stack([np.ones(len(rows)), rows["x"]])
        Vi = Xi @ D @ Xi.T + sigma**2 * np.eye(len(rows))
        information += Xi.T @ np.linalg.solve(Vi, Xi)
    return float(np.sqrt(np.linalg.inv(information)[1, 1]))


def test_cluster_bootstrap_sd_matches_the_true_sampling_sd():
    """Over 8 simulated data sets of 40 groups, the cluster bootstrap's SD of the slope (400
    replicates each) averages to the true sampling SD times sqrt((G-1)/G), the known
    downward bias of resampling G units, within 3 Monte Carlo standard errors."""
    rng = np.random.default_rng(42)
    ratios = []
    for _ in range(8):
        data = _simulated_groups(rng)
        f = lmer("y ~ x + (x | g)", data)
        boot = bootstrap(f, n=400, kind="cluster", seed=rng)
        ratios.append(boot.std["x"] / _true_sd_of_slope(data))
    ratios = np.array(ratios)
    expected = np.sqrt(39 / 40)
    mcse = ratios.std(ddof=1) / np.sqrt(len(ratios))
    assert abs(ratios.mean() - expected) < 3 * mcse + 0.02, (ratios.mean(), mcse)


def test_subsample_scheme_is_not_a_rescalable_m_out_of_n_bootstrap(fit):
    """The article's scheme draws rows, whatever their subject.  For iid rows its spread would
    be sqrt(n/m) = 2 times the right one; here it is not: the same 18 subjects are in every
    replicate, so the between-subject part of the sampling variation is never redrawn (at
    m = n the row bootstrap is too narrow), and m = n/4 rows leave about 2.5 per subject, which
    changes the estimator itself.  So the slope's spread is far from twice the cluster
    bootstrap's, and rescaling it by sqrt(m/n) makes it too narrow.  (MC error of a ratio of
    two SDs from 400 replicates each: about 5%.)"""
    quarter = bootstrap(fit, n=400, kind="subsample", seed=9)
    full = bootstrap(fit, n=400, kind="subsample", m=fit.nobs, seed=9)
    cluster = bootstrap(fit, n=400, kind="cluster", seed=9)
    assert quarter.m == 45 and full.m == 180
    ratio = quarter.std["Days"] / cluster.std["Days"]
    assert ratio < 1.6, ratio
    assert ratio * np.sqrt(45 / 180) < 0.8
    assert full.std["Days"] < 0.7 * cluster.std["Days"]


def test_residual_bootstrap_is_narrower_for_the_fixed_effects(fit):
    # it conditions on the subjects' estimated effects: the between-subject part is missing
    res = bootstrap(fit, n=200, kind="residual", seed=3)
    assert res.std["Days"] < 0.6 * fit.se["Days"]


# ------------------------------------------------------------------ statistics and bands
def test_a_band_statistic_equals_the_population_band(fit):
    grid = pd.DataFrame({"Days": np.arange(10)})
    custom = bootstrap(fit, n=40, seed=6, statistic=lambda f: f.predict(grid, re=False))
    assert custom.table.shape == (40, 10)
    band = bootstrap(fit, n=40, seed=6).population_band(grid)
    ci = custom.confint("percentile")
    np.testing.assert_allclose(band["lower"], ci.iloc[:, 0], rtol=1e-6)
    np.testing.assert_allclose(band["upper"], ci.iloc[:, 1], rtol=1e-6)


def test_population_band_at_zero_is_the_intercept_interval(boot1000, fit):
    band = boot1000.population_band(pd.DataFrame({"Days": [0.0]}))
    ci = boot1000.confint().loc["(Intercept)"]
    assert band["lower"].iloc[0] == pytest.approx(ci.iloc[0], rel=1e-12)
    assert band["upper"].iloc[0] == pytest.approx(ci.iloc[1], rel=1e-12)
    assert band["fit"].iloc[0] == pytest.approx(fit.fixef["(Intercept)"])


def test_subject_band_mode_is_the_blup_at_the_fit(fit, boot1000):
    """Without a draw, each replicate's subject line is the conditional mode at that
    replicate's parameters; its median is close to the fit's own line (the BLUP), and the band
    with the draw is wider than without, and wider than the conditional SD alone allows."""
    grid = pd.DataFrame({"Subject": ["308", "309"], "Days": [9.0, 9.0]})
    mode = boot1000.subject_band(grid, draw=False)
    drawn = boot1000.subject_band(grid, draw=True)
    fitted = fit.predict(grid)
    np.testing.assert_allclose(mode["fit"], fitted, rtol=1e-10)
    assert np.all(np.abs(mode["median"] - fitted) < 0.25 * (mode["upper"] - mode["lower"]))
    assert np.all(drawn["upper"] - drawn["lower"] > mode["upper"] - mode["lower"])


def test_normal_and_basic_intervals(boot1000):
    t, t0 = boot1000.table["Days"], boot1000.t0["Days"]
    normal = boot1000.confint("normal").loc["Days"]
    z = stats.norm.ppf(0.975)
    centre = 2 * t0 - t.mean()
    assert normal.iloc[0] == pytest.approx(centre - z * t.std(ddof=1))
    basic = boot1000.confint("basic", level=0.9).loc["Days"]
    assert basic.iloc[1] == pytest.approx(2 * t0 - t.quantile(0.05))


def test_bca_for_the_cluster_bootstrap(fit):
    boot = bootstrap(fit, n=300, kind="cluster", seed=12)
    bca = boot.confint("bca").loc["Days"]
    pct = boot.confint("percentile").loc["Days"]
    assert boot.jackknife().shape == (18, 6)
    # the slope's distribution is near symmetric: BCa moves the limits by little
    assert np.all(np.abs(bca.to_numpy() - pct.to_numpy()) < 0.5 * boot.std["Days"])
    with pytest.raises(LmmInputError, match="cluster bootstrap only"):
        bootstrap(fit, n=5, seed=1).confint("bca")


def test_failed_replicates_are_counted_not_dropped(fit):
    boot = bootstrap(fit, n=30, kind="subsample", m=30, seed=1)  # 30 rows: 2 x 18 REs > 30
    assert boot.n_failed > 0
    assert len(boot.table) == 30
    assert boot.table[boot.status["failed"]].isna().all().all()
    with pytest.warns(BootstrapWarning, match="failed"):
        boot.confint()


# ------------------------------------------------------------------ bad input
def test_bad_input_is_named(fit, sleep):
    with pytest.raises(LmmInputError, match="n, the number of replicates"):
        bootstrap(fit, n=0)
    with pytest.raises(LmmInputError, match="n, the number of replicates"):
        bootstrap(fit, n=2.5)
    with pytest.raises(LmmInputError, match="unknown kind 'jackknife'"):
        bootstrap(fit, n=5, kind="jackknife")
    with pytest.raises(LmmInputError, match="level"):
        bootstrap(fit, n=5, level=95)
    with pytest.raises(LmmInputError, match="statistic must be a function"):
        bootstrap(fit, n=5, statistic="fixef")
    with pytest.raises(LmmInputError, match="fitted linear mixed model"):
        bootstrap(lmmlib.ols("Reaction ~ Days", sleep), n=5)
    with pytest.raises(LmmInputError, match="unknown method"):
        bootstrap(fit, n=5, seed=1).confint("studentized")
    with pytest.raises(LmmInputError, match="not a grouping factor"):
        bootstrap(fit, n=5, kind="cluster", group="Days")


def test_a_failing_statistic_is_reported_with_its_replicate(fit):
    calls = {"n": 0}

    def fragile(f):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return f.fixef

    with pytest.raises(LmmInputError, match=r"failed on replicate 2: RuntimeError: boom"):
        bootstrap(fit, n=5, seed=1, statistic=fragile)


def test_a_statistic_of_changing_length_is_an_error(fit):
    calls = {"n": 0}

    def changing(f):
        calls["n"] += 1
        return f.fixef if calls["n"] != 4 else f.fixef.iloc[:1]

    with pytest.raises(LmmInputError, match=r"1 values on replicate 3 but 2"):
        bootstrap(fit, n=5, seed=1, statistic=changing)


def test_result_type(boot1000):
    assert isinstance(boot1000, BootstrapResult)
    summary = boot1000.summary()
    assert list(summary.columns) == ["original", "bias", "std. error"]


@pytest.mark.parametrize("kind", ["parametric", "cluster", "subsample"])
def test_bootstrap_many_equals_one_bootstrap_per_fit(fit, kind):
    fits = [fit.refit(y) for _, y in fit.simulate(3, seed=21).items()]
    many = lmmlib.bootstrap_many(fits, n=40, kind=kind, seed=7)
    for f, result in zip(fits, many):
        alone = bootstrap(f, n=40, kind=kind, seed=result.seed)
        assert result.fit is f
        np.testing.assert_allclose(result.table, alone.table, rtol=1e-9, atol=1e-9)
        pd.testing.assert_frame_equal(result.status[["failed", "singular"]],
                                      alone.status[["failed", "singular"]])
    assert len({r.seed for r in many}) == 3
