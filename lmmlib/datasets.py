"""Data sets used in the book, shipped inside the package.

Every chapter loads its data the same way::

    >>> from lmmlib import datasets
    >>> sleep = datasets.sleepstudy()
    >>> sleep.shape
    (180, 3)

The files live in ``lmmlib/data`` with their provenance (``lmmlib/data/README.md``), so a
reader on Binder, Colab or a fresh clone needs nothing else.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pandas as pd

__all__ = ["sleepstudy", "reference", "DataIntegrityError"]

#: SHA-256 of ``sleepstudy.csv`` as distributed with lme4 (see ``data/README.md``).
SLEEPSTUDY_SHA256 = "2918bbddf750e78003059efa97b94885b85c4d7927c22a19c29f7fa5a184c59d"


#: SHA-256 of each file of reference numbers in ``data/reference`` (see its README.md).
REFERENCE_SHA256 = {
    "lme4_sleepstudy": "f12e7df6df806961dbe41d080b3e2866e3a07879cd1c6425149baa59eacc37f0",
    "brms_sleepstudy": "7972d1b34422844fd6ce2d2d03101db978572426d06a7a9e47cb6f63ab1664e2",
    "lme4_bootmer_sleepstudy": "a03596c656f29e0c69f12734bbb0c700d30d5d496354a2857717f11dda222f93",
}


class DataIntegrityError(RuntimeError):
    """A shipped data file does not match the checksum recorded with it."""


def _read_checked(name: str, sha256: str) -> bytes:
    raw = resources.files("lmmlib").joinpath("data", *name.split("/")).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataIntegrityError(
            f"lmmlib/data/{name} has SHA-256 {digest}, expected {sha256}: "
            "the file was changed or damaged; reinstall lmmlib."
        )
    return raw


def sleepstudy() -> pd.DataFrame:
    """Reaction times of 18 subjects over 10 days of sleep restriction (Belenky et al., 2003).

    Returns
    -------
    pandas.DataFrame
        180 rows: ``Reaction`` (float, ms), ``Days`` (int, 0-9) and ``Subject``
        (categorical, 18 levels in the order of the file).

    Notes
    -----
    Days 0-1 were adaptation and training, day 2 the baseline (lme4 issue #615); the
    classic analysis, and this book, use all ten days unless a chapter says otherwise.
    """
    import io

    raw = _read_checked("sleepstudy.csv", SLEEPSTUDY_SHA256)
    df = pd.read_csv(io.BytesIO(raw), dtype={"Subject": str})
    df["Subject"] = pd.Categorical(df["Subject"], categories=list(dict.fromkeys(df["Subject"])))
    df["Days"] = df["Days"].astype("int64")
    return df


def reference(name: str) -> dict:
    """Published numbers of another program that the book and the tests compare against.

    Each file in ``lmmlib/data/reference`` is JSON with a ``source`` entry that says which
    program, version and call produced the numbers; ``data/reference/README.md`` lists them
    with their provenance and SHA-256, checked on every load.

    Parameters
    ----------
    name : str
        One of the keys of ``REFERENCE_SHA256``, e.g. ``"lme4_sleepstudy"``.

    Examples
    --------
    >>> from lmmlib import datasets
    >>> ref = datasets.reference("lme4_sleepstudy")
    >>> round(ref["fits"]["sleepstudy_slopes_reml"]["fixef"]["Days"], 4)
    10.4673
    """
    import json

    if name not in REFERENCE_SHA256:
        known = ", ".join(sorted(REFERENCE_SHA256))
        raise KeyError(f"no reference numbers named {name!r}; known: {known}")
    return json.loads(_read_checked(f"reference/{name}.json", REFERENCE_SHA256[name]))
