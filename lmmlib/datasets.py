"""Data sets used in the book, shipped inside the package.

Every chapter loads its data the same way, by name, as Embrace Uncertainty's ``dataset()``::

    >>> from lmmlib import datasets
    >>> datasets.dataset("sleepstudy").shape
    (180, 3)
    >>> datasets.DATASETS
    ('sleepstudy', 'Dyestuff', 'Dyestuff2', 'Penicillin', 'Pastes', 'cake')

Each data set also has its own function (``datasets.sleepstudy()``, ``datasets.dyestuff()``,
...) whose docstring says what the columns are and where the data come from. The files live
in ``lmmlib/data`` with their provenance and licences (``lmmlib/data/README.md``; all six are
lme4's data sets, GPL >= 2), so a reader on Binder, Colab or a fresh clone needs nothing else.
Every load checks the file's SHA-256.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pandas as pd

__all__ = [
    "dataset", "DATASETS", "sleepstudy", "dyestuff", "dyestuff2", "penicillin",
    "pastes", "cake", "reference", "DataIntegrityError",
]

#: SHA-256 of ``sleepstudy.csv`` as distributed with lme4 (see ``data/README.md``).
SLEEPSTUDY_SHA256 = "2918bbddf750e78003059efa97b94885b85c4d7927c22a19c29f7fa5a184c59d"


#: SHA-256 of the CSV file of each data set (see ``data/README.md``), checked on every load.
DATA_SHA256 = {
    "sleepstudy": SLEEPSTUDY_SHA256,
    "Dyestuff": "4fa4c10f8db617562965d43014e2bb15df244f2cc0a1f83f47b3cd4ac40c17a1",
    "Dyestuff2": "53a2aa3de1b8852e31d3cf1be6168d3c03fa5b6437ac869cac8908c999fd6003",
    "Penicillin": "9a26c574d34d1b6d5a6fcb31d296ffa65fe0339eea4b77f502d90b7f2b4eca24",
    "Pastes": "0bdc6a81e886faa0d279df29be111bf67adc04713b3255165f65c641f8a65b09",
    "cake": "51dd01508ef9ca1b11b61d3ee48005bbb2352fc6bcee5677b9d0791c721d029f",
}

#: The names :func:`dataset` knows, in the order of ``data/README.md``.
DATASETS = tuple(DATA_SHA256)

#: R's factors, read as categoricals (in R's level order where it is not alphabetical).
_DTYPES = {
    "Dyestuff": {"Batch": "category"},
    "Dyestuff2": {"Batch": "category"},
    "Penicillin": {"plate": "category", "sample": "category"},
    "Pastes": {"batch": "category", "cask": "category", "sample": "category"},
    "cake": {
        "replicate": pd.CategoricalDtype([str(i) for i in range(1, 16)]),
        "recipe": "category",
        "temperature": pd.CategoricalDtype([str(t) for t in range(175, 226, 10)]),
    },
}

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


def _read_table(name: str) -> pd.DataFrame:
    import io

    raw = _read_checked(f"{name}.csv", DATA_SHA256[name])
    return pd.read_csv(io.BytesIO(raw), dtype=_DTYPES[name])


def dyestuff() -> pd.DataFrame:
    """Yield of dyestuff from 6 batches of an intermediate product, 5 preparations each.

    The classic one-way random-effects example (lme4's ``Dyestuff``; GPL >= 2). From Davies,
    O. L. and Goldsmith, P. L. (eds) (1972), *Statistical Methods in Research and
    Production*, 4th ed., section 6.4. lme4's REML fit of ``Yield ~ 1 + (1|Batch)`` has
    between-batch SD 42.00 and residual SD 49.51.

    Returns
    -------
    pandas.DataFrame
        30 rows: ``Batch`` (categorical, A-F) and ``Yield`` (grams of standard colour).

    Examples
    --------
    >>> from lmmlib import datasets
    >>> d = datasets.dyestuff()
    >>> d.shape, list(d["Batch"].cat.categories)
    ((30, 2), ['A', 'B', 'C', 'D', 'E', 'F'])
    >>> float(d["Yield"].mean())
    1527.5
    """
    return _read_table("Dyestuff")


def dyestuff2() -> pd.DataFrame:
    """Simulated yields in the layout of :func:`dyestuff` whose between-batch variance is
    estimated as zero: the textbook singular fit (lme4's ``Dyestuff2``; GPL >= 2).

    From Box, G. E. P. and Tiao, G. C. (1973), *Bayesian Inference in Statistical Analysis*,
    section 5.1.2, after Davies and Goldsmith (1972).

    Returns
    -------
    pandas.DataFrame
        30 rows: ``Batch`` (categorical, A-F) and ``Yield``.

    Examples
    --------
    >>> from lmmlib import datasets
    >>> d = datasets.dyestuff2()
    >>> d.shape, round(float(d["Yield"].mean()), 4)
    ((30, 2), 5.6656)
    """
    return _read_table("Dyestuff2")


def penicillin() -> pd.DataFrame:
    """Potency of 6 penicillin samples measured on 24 plates: two crossed random factors.

    Every sample was assayed once on every plate; the response is the ``diameter`` (mm) of
    the zone where growth of the test organism was inhibited (lme4's ``Penicillin``; GPL >= 2).
    From Davies and Goldsmith (1972), section 6.6. Model: ``diameter ~ 1 + (1|plate) +
    (1|sample)``.

    Returns
    -------
    pandas.DataFrame
        144 rows: ``diameter`` (mm), ``plate`` (categorical, a-x) and ``sample``
        (categorical, A-F).

    Examples
    --------
    >>> from lmmlib import datasets
    >>> p = datasets.penicillin()
    >>> p.shape, p["plate"].nunique(), p["sample"].nunique()
    ((144, 3), 24, 6)
    """
    return _read_table("Penicillin")


def pastes() -> pd.DataFrame:
    """Strength of a chemical paste: 2 assays on each of 3 casks from each of 10 batches.

    Casks are nested in batches: the labels a-c recur in every batch, so the cask is
    identified by ``sample`` (``batch:cask``) or by the formula term ``(1|batch/cask)``
    (lme4's ``Pastes``; GPL >= 2). From Davies and Goldsmith (1972), p. 136.

    Returns
    -------
    pandas.DataFrame
        60 rows: ``strength``, ``batch`` (categorical, A-J), ``cask`` (categorical, a-c)
        and ``sample`` (categorical, the 30 combinations ``A:a`` ... ``J:c``).

    Examples
    --------
    >>> from lmmlib import datasets
    >>> p = datasets.pastes()
    >>> p.shape, p["batch"].nunique(), p["sample"].nunique()
    ((60, 4), 10, 30)
    """
    return _read_table("Pastes")


def cake() -> pd.DataFrame:
    """Breaking angle of chocolate cakes: 3 recipes, 15 replicates, 6 baking temperatures.

    A split-plot design: each replicate batch of a recipe (the whole plot) was split into six
    cakes baked at 175-225 degrees F (lme4's ``cake``; GPL >= 2). From Cook, F. E. (1938),
    *Chocolate cake, I. Optimum baking temperature*, Master's thesis, Iowa State College, as
    reported by Cochran, W. G. and Cox, G. M. (1957), *Experimental Designs*, 2nd ed., p. 300.
    Model: ``angle ~ recipe * temperature + (1|recipe:replicate)``.

    Returns
    -------
    pandas.DataFrame
        270 rows: ``replicate`` (categorical, 1-15, nested in recipe), ``recipe``
        (categorical, A-C), ``temperature`` (categorical, 175-225, in R's order), ``angle``
        (degrees) and ``temp`` (the temperature as a number).

    Examples
    --------
    >>> from lmmlib import datasets
    >>> c = datasets.cake()
    >>> c.shape, list(c["temperature"].cat.categories)[:2]
    ((270, 5), ['175', '185'])
    """
    return _read_table("cake")


_LOADERS = {
    "sleepstudy": sleepstudy,
    "Dyestuff": dyestuff,
    "Dyestuff2": dyestuff2,
    "Penicillin": penicillin,
    "Pastes": pastes,
    "cake": cake,
}


def dataset(name: str) -> pd.DataFrame:
    """One of the data sets shipped with lmmlib, by name (as Embrace Uncertainty's ``dataset``).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``"sleepstudy"``, ``"Dyestuff"``, ``"Dyestuff2"``,
        ``"Penicillin"``, ``"Pastes"``, ``"cake"`` (lme4's names; case is ignored).

    Returns
    -------
    pandas.DataFrame
        The data, with R's factors as pandas categoricals; the docstring of the function of
        the same name in lower case (e.g. :func:`penicillin`) describes the columns and the
        source. The file's SHA-256 is checked first (:class:`DataIntegrityError`).

    Examples
    --------
    >>> from lmmlib import datasets
    >>> datasets.dataset("Penicillin").shape
    (144, 3)
    >>> datasets.dataset("penicillin").equals(datasets.penicillin())
    True
    """
    by_lower = {key.lower(): key for key in _LOADERS}
    key = by_lower.get(str(name).lower())
    if key is None:
        raise KeyError(
            f"no data set named {name!r}; lmmlib ships {', '.join(DATASETS)}"
        )
    return _LOADERS[key]()


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
