"""lmmlib's LMM engine on lme4's classic data sets: crossed, nested and boundary fits,
categorical fixed effects, uncorrelated and vector-valued random effects.

Three kinds of truth:

* lme4's published output (its documentation, its test suite, Bates et al. 2015, JSS 67(1),
  and Bates's draft book *lme4: Mixed-effects modeling with R*), asserted to the printed
  precision with :func:`assert_printed`;
* full-precision values from ``mixedlm`` 1.3.0 (a Rust-backed port of lme4), recorded below as
  literals -- every one agrees with lme4's printed output to its precision, and ``mixedlm`` is
  not needed to run these tests;
* statsmodels' MixedLM (an independent implementation) on simulated data.

The data ship with lmmlib (``lmmlib.datasets.dataset``; ``lmmlib/data/README.md`` gives
their provenance, licences and checksums).
"""

import hashlib
import math
import re
import warnings
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from lmmlib import anova, datasets, lmer
from lmmlib.errors import LmmInputError, SingularFitWarning

DATA = resources.files("lmmlib").joinpath("data")
CLASSIC = ("Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "cake")


def load(name: str) -> pd.DataFrame:
    return datasets.dataset(name)


def assert_printed(value: float, printed: str) -> None:
    """``value`` rounds to ``printed`` (a number as R printed it, e.g. '319.7', '-163.7')."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    half_unit = 0.5 * 10.0**-decimals
    assert abs(value - float(printed)) <= half_unit * (1 + 1e-9), (
        f"{value!r} does not print as {printed}"
    )


def sd(fit, group: str, term: str = "(Intercept)") -> float:
    """Standard deviation of a random effect from ``fit.varcorr`` (as.data.frame(VarCorr()))."""
    vc = fit.varcorr
    row = vc[(vc["grp"] == group) & (vc["var1"] == term) & vc["var2"].isna()]
    assert len(row) == 1, f"no single varcorr row for {group}/{term}:\n{vc}"
    return float(row["sdcor"].iloc[0])


@pytest.fixture(scope="module")
def fits():
    """Every model of this file, fitted once (REML and ML)."""
    cache = {}

    def get(data_name, formula, reml=True):
        key = (data_name, formula, reml)
        if key not in cache:
            data = datasets.sleepstudy() if data_name == "sleepstudy" else load(data_name)
            with warnings.catch_warnings():
                if data_name == "Dyestuff2":  # a boundary fit; the warning is tested below
                    warnings.simplefilter("ignore", SingularFitWarning)
                cache[key] = lmer(formula, data, reml=reml)
        return cache[key]

    return get


# --------------------------------------------------------------------------------- the data
def test_data_files_match_readme_checksums():
    readme = DATA.joinpath("README.md").read_text()
    rows = re.findall(
        r"\|\s*`(\w+)\.csv`\s*\|\s*(\d+)\s*\|\s*GPL >= 2 \(lme4\)\s*\|\s*([0-9a-f]{64})\s*\|",
        readme,
    )
    assert {name for name, _, _ in rows} == set(datasets.DATASETS)
    assert set(CLASSIC) < set(datasets.DATASETS)
    for name, nrows, sha in rows:
        raw = DATA.joinpath(f"{name}.csv").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == sha == datasets.DATA_SHA256[name], name
        frame = load(name.removesuffix(".csv"))
        assert len(frame) == int(nrows)
        assert not frame.isna().any().any(), f"{name}: a value is not a level of its factor"


# ----------------------------------------------------------- lme4's published output
DYESTUFF = "Yield ~ 1 + (1|Batch)"
PENICILLIN = "diameter ~ 1 + (1|plate) + (1|sample)"
PASTES = "strength ~ 1 + (1|batch/cask)"
CAKE_FM1 = "angle ~ recipe * temperature + (1|recipe:replicate)"
CAKE_FM2 = "angle ~ recipe + temperature + (1|recipe:replicate)"
CAKE_FM3 = "angle ~ recipe + temp + (1|recipe:replicate)"
SLEEP_UNCORR = "Reaction ~ Days + (Days || Subject)"


def test_dyestuff_reml_as_published(fits):
    # lme4 book ch. 1 / ?Dyestuff: REML criterion 319.7; Batch 42.00, Residual 49.51;
    # (Intercept) 1527.50 (Std. Error 19.38)
    fit = fits("Dyestuff", DYESTUFF)
    assert_printed(fit.deviance, "319.7")
    assert_printed(sd(fit, "Batch"), "42.00")
    assert_printed(fit.sigma, "49.51")
    assert_printed(fit.fixef["(Intercept)"], "1527.50")
    assert_printed(fit.se["(Intercept)"], "19.38")
    assert fit.ngroups == {"Batch": 6} and fit.nobs == 30 and not fit.singular


def test_dyestuff_ml_as_published(fits):
    # lme4 book ch. 1, fm1ML: AIC 333.3, BIC 337.5, logLik -163.7, deviance 327.3;
    # Batch 37.26, Residual 49.51; Std. Error 17.69
    fit = fits("Dyestuff", DYESTUFF, reml=False)
    assert_printed(fit.deviance, "327.3")
    assert_printed(fit.aic, "333.3")
    assert_printed(fit.bic, "337.5")
    assert_printed(fit.loglik, "-163.7")
    assert_printed(sd(fit, "Batch"), "37.26")
    assert_printed(fit.sigma, "49.51")
    assert_printed(fit.se["(Intercept)"], "17.69")


def test_dyestuff_profiled_criterion_at_fixed_theta(fits):
    # lme4's test suite (tests/testthat/test-lmer.R): REMLfun(1) and REMLfun(0) for Dyestuff;
    # a property of the criterion, not of any optimizer
    fit = fits("Dyestuff", DYESTUFF)
    assert fit.objective([1.0]) == pytest.approx(319.792389042002, rel=1e-12)
    assert fit.objective([0.0]) == pytest.approx(326.023232155879, rel=1e-12)


def test_dyestuff2_is_a_boundary_fit_as_published():
    # lme4 book ch. 1 / tests/lmer-1.R: REML 161.8, Batch SD 0, Residual 3.716, and
    # coef(summary(fm)) == (5.6656, 0.67838803150, 8.3515624346) to all.equal's 1.5e-8
    with pytest.warns(SingularFitWarning, match="singular"):
        fit = lmer(DYESTUFF, load("Dyestuff2"))
    assert fit.singular
    assert fit.theta.tolist() == [0.0]
    assert_printed(fit.deviance, "161.8")
    assert sd(fit, "Batch") == 0.0
    assert_printed(fit.sigma, "3.716")
    assert fit.fixef["(Intercept)"] == pytest.approx(5.6656, rel=1.5e-8)
    assert fit.se["(Intercept)"] == pytest.approx(0.67838803150, rel=1.5e-8)
    assert fit.fixef["(Intercept)"] / fit.se["(Intercept)"] == pytest.approx(8.3515624346, rel=1.5e-8)
    # with Batch variance 0 every conditional mode is 0 and the fit is least squares
    assert np.all(fit.ranef["Batch"].to_numpy() == 0.0)
    assert "boundary (singular) fit" in str(fit.summary())


def test_penicillin_crossed_as_published(fits):
    # lme4 book ch. 2, fm03: REML 330.9; plate 0.8467, sample 1.9316, Residual 0.5499;
    # (Intercept) 22.9722 (Std. Error 0.8086)
    fit = fits("Penicillin", PENICILLIN)
    assert_printed(fit.deviance, "330.9")
    assert_printed(sd(fit, "plate"), "0.8467")
    assert_printed(sd(fit, "sample"), "1.9316")
    assert_printed(fit.sigma, "0.5499")
    assert_printed(fit.fixef["(Intercept)"], "22.9722")
    assert_printed(fit.se["(Intercept)"], "0.8086")
    assert fit.ngroups == {"plate": 24, "sample": 6}


def test_pastes_nested_as_published(fits):
    # lme4 book ch. 2, fm04 (ML): sample (= cask within batch) 2.9041, batch 1.0951,
    # Residual 0.8234, (Intercept) 60.0533 (Std. Error 0.6421).  The REML fit (lme4's
    # ?Pastes example): criterion 247.0, cask:batch 2.904, Residual 0.8234 -- its batch SD is
    # 1.287 (checked with mixedlm below); 1.095 is the ML estimate.
    ml = fits("Pastes", PASTES, reml=False)
    assert_printed(sd(ml, "cask:batch"), "2.9041")
    assert_printed(sd(ml, "batch"), "1.0951")
    assert_printed(ml.sigma, "0.8234")
    assert_printed(ml.fixef["(Intercept)"], "60.0533")
    assert_printed(ml.se["(Intercept)"], "0.6421")
    reml = fits("Pastes", PASTES)
    assert_printed(reml.deviance, "247.0")
    assert_printed(sd(reml, "cask:batch"), "2.904")
    assert_printed(reml.sigma, "0.8234")
    assert reml.ngroups == {"cask:batch": 30, "batch": 10}


def test_pastes_anova_as_published(fits):
    # lme4 book ch. 2, anova(fm04a, fm04): is the batch variance needed beside the sample one?
    # Chisq 0.4072 on 1 Df, Pr(>Chisq) 0.5234; deviances 248.40 and 247.99
    m0 = fits("Pastes", "strength ~ 1 + (1|sample)", reml=False)
    m1 = fits("Pastes", "strength ~ 1 + (1|sample) + (1|batch)", reml=False)
    table = anova(m0, m1, names=["fm04a", "fm04"])
    assert table["npar"].tolist() == [3, 4]
    assert_printed(table.loc["fm04a", "deviance"], "248.40")
    assert_printed(table.loc["fm04", "deviance"], "247.99")
    assert_printed(table.loc["fm04", "Chisq"], "0.4072")
    assert table.loc["fm04", "Df"] == 1
    assert_printed(table.loc["fm04", "Pr(>Chisq)"], "0.5234")


def test_sleepstudy_uncorrelated_as_published(fits):
    # Bates et al. (2015), JSS 67(1), fm2: REML 1743.7; Subject (Intercept) 25.051,
    # Days 5.988, Residual 25.565.  lme4's tests/lmer-1.R: fixef 251.405104848485,
    # 10.467285959595 (tolerance 1e-13) and, refitted by ML, AIC 1762, BIC 1778, deviance 1752
    fit = fits("sleepstudy", SLEEP_UNCORR)
    assert_printed(fit.deviance, "1743.7")
    assert_printed(sd(fit, "Subject", "(Intercept)"), "25.051")
    assert_printed(sd(fit, "Subject.1", "Days"), "5.988")
    assert_printed(fit.sigma, "25.565")
    np.testing.assert_allclose(fit.fixef.to_numpy(), [251.405104848485, 10.467285959595], rtol=1e-9)
    ml = fits("sleepstudy", SLEEP_UNCORR, reml=False)
    assert_printed(ml.aic, "1762")
    assert_printed(ml.bic, "1778")
    assert_printed(ml.deviance, "1752")


# ------------------------------------------------- full precision, from mixedlm 1.3.0
# Values computed with mixedlm 1.3.0 (a port of lme4, `mixedlm.lmer`) on the data in
# tests/data; each agrees with lme4's printed output to the printed precision.  theta in lme4's
# order; sd by lme4's group names; fixef in lmmlib's (R's) column order.
MIXEDLM = {
    ("Dyestuff", DYESTUFF, True): dict(
        deviance=319.65427684225745, sigma=49.5100999763089, theta=[0.8483237818632264],
        fixef={"(Intercept)": 1527.5}, se=[19.383412158693687],
        sd={("Batch", "(Intercept)"): 42.00059525232881}),
    ("Dyestuff", DYESTUFF, False): dict(
        deviance=327.32705988113514, sigma=49.510100040795265, theta=[0.7525806860372337],
        fixef={"(Intercept)": 1527.5}, se=[17.69455337473634],
        sd={("Batch", "(Intercept)"): 37.260345054473774}),
    ("Dyestuff2", DYESTUFF, True): dict(
        deviance=161.82827781228846, sigma=3.715684274475726, theta=[0.0],
        fixef={"(Intercept)": 5.6656}, se=[0.678388031232524],
        sd={("Batch", "(Intercept)"): 0.0}),
    ("Dyestuff2", DYESTUFF, False): dict(
        deviance=162.87303665382575, sigma=3.653231351374652, theta=[0.0],
        fixef={"(Intercept)": 5.6656}, se=[0.6669857396443261],
        sd={("Batch", "(Intercept)"): 0.0}),
    ("Penicillin", PENICILLIN, True): dict(
        deviance=330.86058899108656, sigma=0.5499231369655605,
        theta=[1.5396775953886668, 3.5124153976734256],
        fixef={"(Intercept)": 22.972222222222}, se=[0.8085734264744363],
        sd={("plate", "(Intercept)"): 0.8467043331717267,
            ("sample", "(Intercept)"): 1.9315584938147068}),
    ("Penicillin", PENICILLIN, False): dict(
        deviance=332.18834866850113, sigma=0.5499321922154483,
        theta=[1.537593530864846, 3.21975443009769],
        fixef={"(Intercept)": 22.972222222222}, se=[0.7445959264897548],
        sd={("plate", "(Intercept)"): 0.8455721811647964,
            ("sample", "(Intercept)"): 1.770646612139024}),
    ("Pastes", PASTES, True): dict(
        deviance=246.99074585348615, sigma=0.8234075526598892,
        theta=[3.526901825496199, 1.5634602695993005],
        fixef={"(Intercept)": 60.053333333333}, se=[0.6768700661782486],
        sd={("cask:batch", "(Intercept)"): 2.9040776006035207,
            ("batch", "(Intercept)"): 1.2873649942717305}),
    ("Pastes", PASTES, False): dict(
        deviance=247.99446586242505, sigma=0.8234075533893135,
        theta=[3.5269018200135376, 1.3299120201864378],
        fixef={"(Intercept)": 60.053333333333}, se=[0.6421353258039327],
        sd={("cask:batch", "(Intercept)"): 2.904077598661664,
            ("batch", "(Intercept)"): 1.0950596027647541}),
    # cask labels reused across batches, wrongly treated as crossed (a reader's common slip)
    ("Pastes", "strength ~ 1 + (1|batch) + (1|cask)", True): dict(
        deviance=301.47091400520486, sigma=2.7029626235417834,
        theta=[0.6785457149439174, 0.14264418851308744],
        fixef={"(Intercept)": 60.053333333333}, se=[0.7125347349887827],
        sd={("batch", "(Intercept)"): 1.8340837058578459,
            ("cask", "(Intercept)"): 0.38556191001632356}),
    ("Pastes", "strength ~ 1 + (1|batch) + (1|cask)", False): dict(
        deviance=302.55773809315633, sigma=2.710853592578848,
        theta=[0.6305218838355937, 0.09959854143022943],
        fixef={"(Intercept)": 60.053333333333}, se=[0.6625199422126168],
        sd={("batch", "(Intercept)"): 1.709252513995302,
            ("cask", "(Intercept)"): 0.2699970638517507}),
    ("cake", CAKE_FM1, True): dict(
        deviance=1633.2461814723338, sigma=4.5244778119478815, theta=[1.42959163071464],
        fixef={
            "(Intercept)": 29.133333333333, "recipeB": -2.266666666667, "recipeC": -1.2,
            "temperature185": 2.4, "temperature195": 1.666666666667, "temperature205": 4.4,
            "temperature215": 9.533333333333, "temperature225": 5.933333333333,
            "recipeB:temperature185": 0.133333333333, "recipeC:temperature185": -1.4,
            "recipeB:temperature195": 3.2, "recipeC:temperature195": 2.133333333333,
            "recipeB:temperature205": 0.866666666667, "recipeC:temperature205": -1.466666666667,
            "recipeB:temperature215": -1.933333333333, "recipeC:temperature215": -3.066666666667,
            "recipeB:temperature225": 2.466666666667, "recipeC:temperature225": 1.866666666667,
        },
        se=[2.0381026553940447, 2.8823124167668785, 2.8823124167668794] + [1.6521057056903226] * 5
        + [2.3364302954612204] * 10,
        sd={("recipe:replicate", "(Intercept)"): 6.468155613314778}),
    ("cake", CAKE_FM1, False): dict(
        deviance=1679.0518652547667, sigma=4.371060836847441, theta=[1.4295916307146392],
        fixef=None,  # same estimates as REML (balanced design)
        se=[1.9689942284482875, 2.7845783421059083, 2.7845783421059087] + [1.5960857470458443] * 5
        + [2.2572061101826177] * 10,
        sd={("recipe:replicate", "(Intercept)"): 6.248831989701628}),
    ("cake", CAKE_FM2, True): dict(
        deviance=1673.8730450143184, sigma=4.5251150998004475, theta=[1.4293738762298958],
        fixef={
            "(Intercept)": 28.977777777778, "recipeB": -1.477777777778,
            "recipeC": -1.522222222222, "temperature185": 1.977777777778,
            "temperature195": 3.444444444444, "temperature205": 4.2,
            "temperature215": 7.866666666667, "temperature225": 7.377777777778,
        },
        se=[1.8427663368066922, 2.4562533424742647, 2.4562533424742656] + [0.953978025985969] * 5,
        sd={("recipe:replicate", "(Intercept)"): 6.468081310588198}),
    ("cake", CAKE_FM2, False): dict(
        deviance=1689.5822483176598, sigma=4.4745535678302035, theta=[1.3937952853597924],
        fixef=None,
        se=[1.7850084433507343, 2.3729661707380694, 2.3729661707380694] + [0.9433187191184121] * 5,
        sd={("recipe:replicate", "(Intercept)"): 6.236611666931576}),
    ("cake", CAKE_FM3, True): dict(
        deviance=1693.8443124252067, sigma=4.550540385590742, theta=[1.420734051758481],
        fixef={"(Intercept)": 1.515873015873, "recipeB": -1.477777777778,
               "recipeC": -1.522222222222, "temp": 0.158031746032},
        se=[3.6789460076031797, 2.4562533422648736, 2.456253342264873, 0.016215774331007543],
        sd={("recipe:replicate", "(Intercept)"): 6.465107679710935}),
    ("cake", CAKE_FM3, False): dict(
        deviance=1696.1577524753388, sigma=4.540416813466005, theta=[1.37182843208134],
        fixef={"(Intercept)": 1.515873015873, "recipeB": -1.477777777778,
               "recipeC": -1.522222222222, "temp": 0.158031746032},
        se=[3.6451050472117736, 2.3729661690837083, 2.3729661690837083, 0.016179699151560256],
        sd={("recipe:replicate", "(Intercept)"): 6.228672878212825}),
    ("sleepstudy", SLEEP_UNCORR, True): dict(
        deviance=1743.6692935813123, sigma=25.5652853531234,
        theta=[0.9798963010492612, 0.2342305780365877],
        fixef={"(Intercept)": 251.405104848485, "Days": 10.467285959596},
        se=[6.885381301681456, 1.5595659432801825],
        sd={("Subject", "(Intercept)"): 25.051328552794473, ("Subject.1", "Days"): 5.9881715659324035}),
    ("sleepstudy", SLEEP_UNCORR, False): dict(
        deviance=1752.0032551398826, sigma=25.556134703721263,
        theta=[0.9458106856162919, 0.22692823375919585],
        fixef={"(Intercept)": 251.405104848485, "Days": 10.467285959596},
        se=[6.707673730220986, 1.5193144816809772],
        sd={("Subject", "(Intercept)"): 24.171265285828916, ("Subject.1", "Days"): 5.799408510027556}),
}


@pytest.mark.parametrize(
    "key", list(MIXEDLM), ids=[f"{d}|{f}|{'REML' if r else 'ML'}" for d, f, r in MIXEDLM]
)
def test_full_precision_against_mixedlm(fits, key):
    fit, ref = fits(*key), MIXEDLM[key]
    # the criterion is flat at the optimum: the minimum agrees far beyond the parameters
    assert fit.deviance == pytest.approx(ref["deviance"], rel=1e-9)
    assert fit.deviance <= ref["deviance"] + 1e-7  # lmmlib at least as good as mixedlm
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=2e-5, atol=1e-7)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=2e-6)
    if ref["fixef"] is not None:
        assert list(fit.fixef.index) == list(ref["fixef"])
        np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()),
                                   rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=2e-5)
    for (group, term), value in ref["sd"].items():
        assert sd(fit, group, term) == pytest.approx(value, rel=2e-5, abs=1e-7), (group, term)
    assert fit.optinfo["converged"]


# --------------------------------------------------------- names, levels, random effects
def test_nested_grouping_named_as_lme4(fits):
    # lme4's findbars turns (1|batch/cask) into (1|batch) + (1|cask:batch); the interaction
    # factor's levels are cask:batch pairs with cask varying slowest ('a:A', 'a:B', ...).
    # Terms are ordered by decreasing number of levels, as lme4 does.
    fit = fits("Pastes", PASTES)
    assert fit.varcorr["grp"].tolist() == ["cask:batch", "batch", "Residual"]
    assert list(fit.ranef) == ["cask:batch", "batch"]
    cask = fit.ranef["cask:batch"]
    assert list(cask.index) == [f"{c}:{b}" for c in "abc" for b in "ABCDEFGHIJ"]
    assert list(cask.columns) == ["(Intercept)"]
    assert list(fit.ranef["batch"].index) == list("ABCDEFGHIJ")
    # written out by hand, the interaction keeps the order it is written in
    explicit = fits("Pastes", "strength ~ 1 + (1|batch) + (1|batch:cask)")
    assert explicit.varcorr["grp"].tolist() == ["batch:cask", "batch", "Residual"]
    assert list(explicit.ranef["batch:cask"].index[:4]) == ["A:a", "A:b", "A:c", "B:a"]
    assert explicit.deviance == pytest.approx(fit.deviance, rel=1e-10)
    # and a factor with unique labels (sample = batch:cask) is the same model
    by_sample = fits("Pastes", "strength ~ 1 + (1|sample) + (1|batch)")
    assert by_sample.deviance == pytest.approx(fit.deviance, rel=1e-10)
    np.testing.assert_allclose(
        by_sample.ranef["sample"].loc[[f"{b}:{c}" for c in "abc" for b in "ABCDEFGHIJ"]].to_numpy(),
        cask.to_numpy(), rtol=1e-5, atol=1e-7,
    )


def test_nested_conditional_modes_against_mixedlm(fits):
    # mixedlm 1.3.0 conditional modes and conditional variances, REML fit
    fit = fits("Pastes", PASTES)
    cask, batch = fit.ranef["cask:batch"]["(Intercept)"], fit.ranef["batch"]["(Intercept)"]
    expected_cask = {"a:A": 1.7746870086684188, "b:A": 0.33265113921025596,
                     "c:A": 1.9669584579295099, "b:E": -3.9424487153940686,
                     "c:J": -1.7031214016205163}
    expected_batch = {"A": 0.8006442691776168, "E": -1.502413794269855, "J": -0.5317531968482769}
    for level, value in expected_cask.items():
        assert cask[level] == pytest.approx(value, rel=1e-5), level
    for level, value in expected_batch.items():
        assert batch[level] == pytest.approx(value, rel=1e-5), level
    # balanced design: every level has the same conditional variance
    np.testing.assert_allclose(fit.condvar["cask:batch"][:, 0, 0], 1.303526139772635, rtol=1e-5)
    np.testing.assert_allclose(fit.condvar["batch"][:, 0, 0], 1.0577989949003432, rtol=1e-5)
    frame = fit.ranef_frame()
    assert frame["grpvar"].unique().tolist() == ["cask:batch", "batch"]
    assert frame["grp"].iloc[0] == "a:A"
    np.testing.assert_allclose(frame["condsd"].iloc[0], math.sqrt(1.303526139772635), rtol=1e-5)


def test_crossed_conditional_modes_against_mixedlm(fits):
    fit = fits("Penicillin", PENICILLIN)
    assert list(fit.ranef) == ["plate", "sample"]
    assert list(fit.ranef["plate"].index) == list("abcdefghijklmnopqrstuvwx")
    assert list(fit.ranef["sample"].index) == list("ABCDEF")
    plate, sample = fit.ranef["plate"]["(Intercept)"], fit.ranef["sample"]["(Intercept)"]
    for level, value in {"a": 0.8045470459591855, "b": 0.8045470459591855,
                         "x": -1.2197971341959415}.items():
        assert plate[level] == pytest.approx(value, rel=1e-5), level
    np.testing.assert_allclose(
        sample.to_numpy(),
        [2.187057968161794, -1.0104761498436634, 1.93789946546007, -0.09689497327067598,
         -0.013842139036768286, -3.003744171457453],
        rtol=1e-5, atol=1e-7,
    )
    np.testing.assert_allclose(fit.condvar["plate"][:, 0, 0], 0.07363599644859858, rtol=1e-5)
    np.testing.assert_allclose(fit.condvar["sample"][:, 0, 0], 0.040873035506031476, rtol=1e-5)


def test_interaction_grouping_factor_levels_in_r_order(fits):
    # recipe:replicate: recipe varies slowest, replicate in its factor order 1..15 (not 1, 10, 11)
    fit = fits("cake", CAKE_FM3)
    levels = list(fit.ranef["recipe:replicate"].index)
    assert levels == [f"{r}:{i}" for r in "ABC" for i in range(1, 16)]
    assert fit.ngroups == {"recipe:replicate": 45}


def test_uncorrelated_terms_named_as_lme4(fits):
    # (Days || Subject) is (1|Subject) + (0 + Days|Subject): the same model as written out,
    # two terms on one factor.  lme4's VarCorr makes the duplicated names unique
    # (make.names(unique = TRUE): 'Subject', 'Subject.1'); ranef keeps one data frame per factor.
    fit = fits("sleepstudy", SLEEP_UNCORR)
    expanded = fits("sleepstudy", "Reaction ~ Days + (1|Subject) + (0 + Days|Subject)")
    assert expanded.deviance == pytest.approx(fit.deviance, rel=1e-10)
    np.testing.assert_allclose(expanded.theta, fit.theta, rtol=1e-5)
    assert list(fit.ranef) == ["Subject"]
    assert list(fit.ranef["Subject"].columns) == ["(Intercept)", "Days"]
    assert fit.ngroups == {"Subject": 18}
    assert fit.varcorr["grp"].tolist() == ["Subject", "Subject.1", "Residual"]


def test_boundary_fit_of_a_vector_valued_term():
    # simulated intercept-only group effects fitted with a random slope: the estimated
    # covariance is singular (correlation -1), the last diagonal element of T is 0.
    # mixedlm 1.3.0: REML 221.09895195492143, theta (0.90774691, -0.06132673, 0)
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(12), 6)
    x = np.tile(np.arange(6), 12).astype(float)
    y = 1 + 0.5 * x + rng.normal(scale=1.0, size=12)[g] + rng.normal(size=72)
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{j:02d}" for j in g])})
    with pytest.warns(SingularFitWarning):
        fit = lmer("y ~ x + (x | g)", data)
    assert fit.singular
    assert fit.deviance == pytest.approx(221.09895195492143, rel=1e-9)
    np.testing.assert_allclose(fit.theta, [0.9077469132265916, -0.06132672610780285, 0.0],
                               rtol=1e-4, atol=1e-6)
    assert fit.sigma == pytest.approx(0.9740981627351651, rel=1e-5)
    np.testing.assert_allclose(fit.fixef, [1.2206315815132458, 0.4619597515443147], rtol=1e-7)
    corr = fit.varcorr.dropna(subset=["var2"])["sdcor"].iloc[0]
    assert corr == pytest.approx(-1.0, abs=1e-6)


# ------------------------------------------------------------------------- prediction
def test_predict_crossed_with_new_levels(fits):
    fit = fits("Penicillin", PENICILLIN)
    b0 = fit.fixef["(Intercept)"]
    plate, sample = fit.ranef["plate"]["(Intercept)"], fit.ranef["sample"]["(Intercept)"]
    new = pd.DataFrame({"plate": ["a", "zz", "b"], "sample": ["A", "B", "Q"]}, index=[10, 11, 12])
    got = fit.predict(new, allow_new_levels=True)
    assert list(got.index) == [10, 11, 12]
    np.testing.assert_allclose(
        got.to_numpy(),
        [b0 + plate["a"] + sample["A"], b0 + sample["B"], b0 + plate["b"]],
        rtol=1e-12,
    )
    np.testing.assert_allclose(fit.predict(new, re=False).to_numpy(), np.full(3, b0), rtol=1e-12)
    with pytest.raises(LmmInputError, match="zz"):
        fit.predict(new)
    # on the fitted data, predict reproduces the fitted values
    data = load("Penicillin")
    np.testing.assert_allclose(fit.predict(data).to_numpy(), fit.fitted.to_numpy(), rtol=1e-12)


def test_predict_nested_with_new_levels(fits):
    # a new cask in a known batch keeps the batch effect; a new batch gets neither
    fit = fits("Pastes", PASTES)
    b0 = fit.fixef["(Intercept)"]
    batch, cask = fit.ranef["batch"]["(Intercept)"], fit.ranef["cask:batch"]["(Intercept)"]
    new = pd.DataFrame({"batch": ["A", "A", "K", "B"], "cask": ["a", "d", "a", "c"]})
    got = fit.predict(new, allow_new_levels=True)
    np.testing.assert_allclose(
        got.to_numpy(),
        [b0 + batch["A"] + cask["a:A"], b0 + batch["A"], b0, b0 + batch["B"] + cask["c:B"]],
        rtol=1e-12,
    )
    with pytest.raises(LmmInputError, match="cask:batch|batch"):
        fit.predict(new)


def test_predict_categorical_fixed_effects_on_a_subset(fits):
    # new data with only some levels of recipe and temperature keeps the fitted contrasts
    fit = fits("cake", CAKE_FM1)
    data = load("cake")
    rows = data.index[(data["recipe"] == "C") & (data["temperature"] == "225")]
    new = data.loc[rows].copy()
    new["recipe"] = new["recipe"].astype(str)
    new["temperature"] = new["temperature"].astype(str)
    np.testing.assert_allclose(fit.predict(new).to_numpy(), fit.fitted.loc[rows].to_numpy(), rtol=1e-12)
    population = fit.fixef[["(Intercept)", "recipeC", "temperature225", "recipeC:temperature225"]].sum()
    np.testing.assert_allclose(fit.predict(new, re=False).to_numpy(), population, rtol=1e-12)


def test_wald_intervals_name_nested_terms_as_lme4(fits):
    # lme4's confint(fm, method = "Wald", oldNames = FALSE): NA for the variance parameters
    fit = fits("Pastes", PASTES)
    ci = fit.confint(method="wald")
    assert list(ci.index) == ["sd_(Intercept)|cask:batch", "sd_(Intercept)|batch", "sigma",
                              "(Intercept)"]
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    assert ci.iloc[:3].isna().all().all()
    half = 1.959963984540054 * 0.6768700661782486  # z_0.975 x mixedlm's standard error
    np.testing.assert_allclose(ci.loc["(Intercept)"], [60.053333333333 - half, 60.053333333333 + half],
                               rtol=1e-7)


# --------------------------------------------------------------------------------- anova
def test_cake_anova_against_mixedlm(fits, capsys):
    # lme4's ?cake: anova(fm3, fm2, fm1), all fitted by ML; mixedlm 1.3.0 full precision.
    # fm3 (linear in temp) is nested in fm2 (temperature as a factor), nested in fm1.
    models = [fits("cake", f) for f in (CAKE_FM3, CAKE_FM2, CAKE_FM1)]  # REML fits
    table = anova(*models, names=["fm3", "fm2", "fm1"])
    assert "refitting model(s) with ML (instead of REML)" in capsys.readouterr().out
    assert table["npar"].tolist() == [6, 10, 20]
    np.testing.assert_allclose(table["deviance"], [1696.1577524753388, 1689.5822483176598,
                                                   1679.0518652547667], rtol=1e-9)
    np.testing.assert_allclose(table["Chisq"].iloc[1:], [6.575504157679006, 10.53038306289318],
                               rtol=1e-6)
    assert table["Df"].iloc[1:].tolist() == [4, 10]
    np.testing.assert_allclose(table["Pr(>Chisq)"].iloc[1:],
                               [0.16009474637302507, 0.3952548798926565], rtol=1e-5)
    ml = [fits("cake", f, reml=False) for f in (CAKE_FM3, CAKE_FM2, CAKE_FM1)]
    np.testing.assert_allclose(table["AIC"], [m.aic for m in ml], rtol=1e-9)


def test_nested_random_effect_anova(fits, capsys):
    # is the cask-within-batch variance needed? (ML, mixedlm 1.3.0: Chisq 54.604665, 1 Df)
    m0 = fits("Pastes", "strength ~ 1 + (1|batch)")
    m1 = fits("Pastes", PASTES)
    table = anova(m0, m1)
    assert "refitting model(s) with ML" in capsys.readouterr().out
    assert table["npar"].tolist() == [3, 4]
    np.testing.assert_allclose(table["deviance"], [302.5991307399221, 247.99446586242505], rtol=1e-9)
    assert table["Chisq"].iloc[1] == pytest.approx(54.604665, rel=1e-6)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(1.473854e-13, rel=1e-5)


# ------------------------------------------------------------------------------- summary
def test_summary_of_a_nested_fit_is_laid_out_as_lme4(fits):
    text = str(fits("Pastes", PASTES).summary())
    lines = text.splitlines()
    assert lines[0] == "Linear mixed model fit by REML ['lmerMod']"
    assert "REML criterion at convergence: 247.0" in lines
    start = lines.index("Random effects:")
    table = [line.split() for line in lines[start + 1: start + 5]]
    assert table[0] == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    assert table[1][:2] == ["cask:batch", "(Intercept)"] and table[1][3] == "2.9041"
    assert table[2][:2] == ["batch", "(Intercept)"] and table[2][3] == "1.2874"
    assert table[3][0] == "Residual" and table[3][2] == "0.8234"
    # lme4's .prt.grps separates the factors with '; '
    assert "Number of obs: 60, groups:  cask:batch, 30; batch, 10" in lines
    fixed = lines[lines.index("Fixed effects:") + 1:]
    assert fixed[0].split() == ["Estimate", "Std.", "Error", "t", "value"]
    assert fixed[1].split()[:3] == ["(Intercept)", "60.0533", "0.6769"]


def test_summary_of_an_ml_fit_shows_the_information_criteria(fits):
    # lme4 book ch. 1, fm1ML: AIC 333.3, BIC 337.5, logLik -163.7, deviance 327.3, df.resid 27
    lines = str(fits("Dyestuff", DYESTUFF, reml=False).summary()).splitlines()
    assert lines[0].startswith("Linear mixed model fit by maximum likelihood")
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["AIC"])
    assert lines[head].split() == ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    assert lines[head + 1].split() == ["333.3", "337.5", "-163.7", "327.3", "27"]


def test_summary_of_categorical_fixed_effects(fits):
    fit = fits("cake", CAKE_FM1)
    summary = fit.summary()
    assert list(summary.coefficients.index) == list(MIXEDLM[("cake", CAKE_FM1, True)]["fixef"])
    assert list(summary.coefficients.columns) == ["Estimate", "Std. Error", "t value"]
    lines = str(summary).splitlines()
    assert "Number of obs: 270, groups:  recipe:replicate, 45" in lines
    fixed = lines[lines.index("Fixed effects:") + 1: lines.index("Fixed effects:") + 20]
    assert [line.split()[0] for line in fixed[1:]] == list(fit.fixef.index)
    corr = summary.fixef_correlation.to_numpy()
    np.testing.assert_allclose(corr, corr.T)
    np.testing.assert_allclose(np.diag(corr), 1.0)


def test_summary_names_the_second_term_on_a_factor_as_lme4(fits):
    # lme4 prints the (0 + Days | Subject) term of (Days || Subject) as 'Subject.1'
    lines = str(fits("sleepstudy", SLEEP_UNCORR).summary()).splitlines()
    start = lines.index("Random effects:")
    rows = [line.split() for line in lines[start + 1: start + 5]]
    assert [row[0] for row in rows[1:]] == ["Subject", "Subject.1", "Residual"]
    assert rows[2][1:4] == ["Days", "35.86", "5.988"]


# ------------------------------------------------- several slopes, against statsmodels
def simulate_trial(seed=2024, subjects=30, days=10):
    """Sleep-deprivation-like trial: three arms (between subjects), random intercepts and
    Days slopes with correlation 0.06 (lme4's sleepstudy estimates)."""
    rng = np.random.default_rng(seed)
    arm = np.repeat(rng.choice(["control", "drugA", "drugB"], size=subjects), days)
    code = np.repeat(np.arange(subjects), days)
    day = np.tile(np.arange(days), subjects)
    b = rng.normal(size=(subjects, 2)) @ np.array([[25.0, 0.0], [1.5, 6.0]]).T
    shift = pd.Series({"control": 0.0, "drugA": -15.0, "drugB": 10.0})[arm].to_numpy()
    y = 250 + 10 * day + shift + b[code, 0] + b[code, 1] * day + rng.normal(scale=25, size=len(code))
    return pd.DataFrame({"Reaction": y, "Days": day, "Arm": pd.Categorical(arm),
                         "Subject": pd.Categorical([f"S{j:02d}" for j in code])})


def simulate_two_slopes(seed=7, groups=25, per=12):
    """Two covariates with random slopes (3 x 3 covariance) and a three-level factor."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x1, x2 = rng.normal(size=len(g)), rng.uniform(-1, 1, size=len(g))
    cond = rng.choice(["low", "mid", "high"], size=len(g))
    cov = np.array([[4.0, 0.6, -0.5], [0.6, 1.0, 0.2], [-0.5, 0.2, 0.8]])
    b = rng.multivariate_normal(np.zeros(3), cov, size=groups)
    shift = pd.Series({"high": 1.0, "low": 0.0, "mid": 0.4})[cond].to_numpy()
    y = (2 + 1.5 * x1 - 0.7 * x2 + shift + b[g, 0] + b[g, 1] * x1 + b[g, 2] * x2
         + rng.normal(scale=0.8, size=len(g)))
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "cond": cond,
                         "g": pd.Categorical([f"G{j:02d}" for j in g])})


STATSMODELS_CASES = {
    "slopes and a between-subject factor": (
        simulate_trial, "Reaction ~ Days + Arm + (Days | Subject)",
        ("Reaction ~ Days + Arm", "Subject", "~Days"),
        {"(Intercept)": "Intercept", "Days": "Days", "ArmdrugA": "Arm[T.drugA]",
         "ArmdrugB": "Arm[T.drugB]"}),
    "two slopes and a within-group factor": (
        simulate_two_slopes, "y ~ x1 + x2 + cond + (x1 + x2 | g)",
        ("y ~ x1 + x2 + cond", "g", "~x1 + x2"),
        {"(Intercept)": "Intercept", "x1": "x1", "x2": "x2", "condlow": "cond[T.low]",
         "condmid": "cond[T.mid]"}),
}


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("case", list(STATSMODELS_CASES))
def test_several_slopes_against_statsmodels(case, reml):
    simulate, formula, (sm_formula, group, re_formula), names = STATSMODELS_CASES[case]
    data = simulate()
    fit = lmer(formula, data, reml=reml)
    ref = smf.mixedlm(sm_formula, data, groups=group, re_formula=re_formula).fit(
        reml=reml, method=["bfgs"], gtol=1e-8, maxiter=5000)
    # statsmodels' (REML) log-likelihood has lme4's constants; lmmlib at least as high
    assert fit.loglik == pytest.approx(ref.llf, abs=1e-6)
    assert fit.loglik >= ref.llf - 1e-9
    assert list(fit.fixef.index) == list(names)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fe_params[list(names.values())].to_numpy(),
                               rtol=1e-6)
    assert fit.sigma**2 == pytest.approx(ref.scale, rel=1e-5)
    T = fit.layout.templates(fit.theta)[0]
    np.testing.assert_allclose(fit.sigma**2 * T @ T.T, ref.cov_re.to_numpy(), rtol=1e-4)
    blups = pd.DataFrame(ref.random_effects).T.to_numpy()
    np.testing.assert_allclose(fit.ranef[group].to_numpy(), blups, rtol=1e-4,
                               atol=1e-5 * np.abs(blups).max())
    # lme4's theta order: the lower triangle of T, column by column
    k = T.shape[0]
    assert len(fit.theta) == k * (k + 1) // 2
    np.testing.assert_allclose(fit.theta, T.T[np.triu_indices(k)], rtol=1e-12)
