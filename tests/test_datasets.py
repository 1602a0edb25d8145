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



@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return datasets.sleepstudy()


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
