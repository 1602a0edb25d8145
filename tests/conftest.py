"""Fixtures shared by the test modules."""

import pandas as pd
import pytest

from lmmlib import datasets


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    """lme4's sleepstudy, loaded once per test module (a module may not change it)."""
    return datasets.sleepstudy()
