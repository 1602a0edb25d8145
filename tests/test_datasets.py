"""The shipped sleepstudy data: shape, types, values, and its checksum guard."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmlib import datasets
from lmmlib.datasets import DataIntegrityError


def test_shape_columns_and_dtypes(sleep):
    assert sleep.shape == (180, 3)
    assert list(sleep.columns) == ["Reaction", "Days", "Subject"]
    assert sleep["Reaction"].dtype == np.float64
    assert sleep["Days"].dtype == np.int64
    assert isinstance(sleep["Subject"].dtype, pd.CategoricalDtype)
    assert not sleep.isna().any().any()


def test_eighteen_subjects_each_observed_on_days_0_to_9(sleep):
    subjects = sleep["Subject"].cat.categories
    assert len(subjects) == 18
    assert subjects[0] == "308" and subjects[-1] == "372"  # order of the file
    counts = sleep["Subject"].value_counts()
    assert (counts == 10).all()
    for _, days in sleep.groupby("Subject", observed=True)["Days"]:
        assert sorted(days) == list(range(10))


def test_values_agree_with_lme4(sleep):
    """The design is balanced, so the mean response equals lme4's fixed-effect line at the mean
    day: (Intercept) + 4.5 * Days, from R's fit of these data."""
    fixef = datasets.reference("lme4_sleepstudy")["fits"]["sleepstudy_slopes_reml"]["fixef"]
    assert sleep["Reaction"].mean() == pytest.approx(
        fixef["(Intercept)"] + 4.5 * fixef["Days"], rel=1e-11
    )
    first = sleep.iloc[0]
    assert (first["Reaction"], first["Days"], first["Subject"]) == (249.56, 0, "308")
    assert sleep["Reaction"].between(190, 470).all()


def test_checksum_constant_matches_the_shipped_file_and_its_readme():
    data_dir = resources.files("lmmlib").joinpath("data")
    digest = hashlib.sha256(data_dir.joinpath("sleepstudy.csv").read_bytes()).hexdigest()
    assert digest == datasets.SLEEPSTUDY_SHA256
    readme = data_dir.joinpath("README.md").read_text()
    assert re.search(rf"SHA-256 of the file:\s*{digest}", readme)


def _copy_of_data(tmp_path: Path, edit=lambda raw: raw) -> Path:
    """A package-like folder whose data/sleepstudy.csv is (an edited copy of) the shipped one."""
    raw = resources.files("lmmlib").joinpath("data", "sleepstudy.csv").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sleepstudy.csv").write_bytes(edit(raw))
    return tmp_path


def test_an_intact_copy_loads(tmp_path, monkeypatch, sleep):
    root = _copy_of_data(tmp_path)
    monkeypatch.setattr(datasets.resources, "files", lambda package: root)
    pd.testing.assert_frame_equal(datasets.sleepstudy(), sleep)


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw.replace(b"249.56,", b"294.56,", 1),  # one value changed
        lambda raw: raw[: len(raw) // 2],  # truncated download
        lambda raw: raw.replace(b"\n", b"\r\n"),  # line endings rewritten
    ],
    ids=["changed-value", "truncated", "crlf"],
)
def test_a_corrupted_copy_raises(tmp_path, monkeypatch, edit):
    root = _copy_of_data(tmp_path, edit)
    monkeypatch.setattr(datasets.resources, "files", lambda package: root)
    with pytest.raises(DataIntegrityError, match=r"sleepstudy\.csv has SHA-256 [0-9a-f]{64}, "
                                                 rf"expected {datasets.SLEEPSTUDY_SHA256}"):
        datasets.sleepstudy()


def test_reference_numbers_ship_with_lmmlib_and_unknown_names_are_refused():
    ref = datasets.reference("lme4_sleepstudy")
    assert ref["source"].startswith("R 4.2.2, lme4 1.1-31")
    assert ref["fits"]["sleepstudy_slopes_reml"]["fixef"]["(Intercept)"] == pytest.approx(251.4051, abs=1e-4)
    with pytest.raises(KeyError, match="no reference numbers named 'brms'"):
        datasets.reference("brms")


# ------------------------------------------------ the classic data sets, by name (issue 13)
CLASSIC_SHAPES = {
    "Dyestuff": (30, 2),
    "Dyestuff2": (30, 2),
    "Penicillin": (144, 3),
    "Pastes": (60, 4),
    "cake": (270, 5),
}


@pytest.mark.parametrize("name", sorted(CLASSIC_SHAPES))
def test_classic_data_sets_load_by_name_with_their_factors(name):
    frame = datasets.dataset(name)
    assert frame.shape == CLASSIC_SHAPES[name]
    assert not frame.isna().any().any()  # every value is a level of its factor
    assert frame.equals(getattr(datasets, name.lower())())
    loader = getattr(datasets, name.lower())
    assert "GPL >= 2" in loader.__doc__ and "Examples" in loader.__doc__


def test_classic_values_agree_with_lme4():
    """Numbers lme4 prints for these data: Dyestuff's grand mean is lme4's fixed intercept
    1527.50 (a balanced one-way layout); Penicillin is fully crossed, 24 plates x 6 samples."""
    assert datasets.dyestuff()["Yield"].mean() == pytest.approx(1527.5, abs=1e-12)
    pen = datasets.penicillin()
    assert (pen.groupby(["plate", "sample"], observed=True).size() == 1).all()
    pastes = datasets.pastes()
    assert pastes.groupby("sample", observed=True)["batch"].nunique().eq(1).all()  # nested
    cake = datasets.cake()
    assert list(cake["replicate"].cat.categories) == [str(i) for i in range(1, 16)]
    assert (cake["temperature"].astype(int) == cake["temp"]).all()


def test_dataset_names_and_errors():
    assert datasets.DATASETS == (
        "sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "cake"
    )
    assert datasets.dataset("SLEEPSTUDY").equals(datasets.sleepstudy())
    with pytest.raises(KeyError, match="no data set named 'InstEval'; lmmlib ships sleepstudy"):
        datasets.dataset("InstEval")


def test_a_corrupted_classic_file_raises(tmp_path, monkeypatch):
    raw = resources.files("lmmlib").joinpath("data", "Dyestuff.csv").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "Dyestuff.csv").write_bytes(raw.replace(b"A,1545", b"A,1554", 1))
    monkeypatch.setattr(datasets.resources, "files", lambda package: tmp_path)
    with pytest.raises(DataIntegrityError, match=r"Dyestuff\.csv has SHA-256"):
        datasets.dyestuff()


def test_docstring_examples_of_datasets_run():
    import doctest

    result = doctest.testmod(datasets, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0
