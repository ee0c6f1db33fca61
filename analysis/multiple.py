"""Corrections across metrics and arms: Holm (family-wise error) and Benjamini–Hochberg (false
discovery rate), by statsmodels.stats.multitest (docs/statistics.md §12).  Applied at every
look to always-valid p-values they keep their guarantee (Johari et al.).  nan p-values (no
information yet) are left out of the family and stay nan."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from statsmodels.stats.multitest import multipletests

_METHODS = {"holm": "holm", "bh": "fdr_bh"}


def adjust_pvalues(pvalues: Sequence[float], *, method: Literal["holm", "bh"]) -> list[float]:
    """Adjusted p-values, in the input order."""
    if method not in _METHODS:
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    if any(not math.isnan(p) and not 0 <= p <= 1 for p in pvalues):
        raise ValueError(f"p-values must lie in [0, 1], got {list(pvalues)}")
    kept = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    out = [math.nan] * len(pvalues)
    if kept:
        adjusted = multipletests([pvalues[i] for i in kept], method=_METHODS[method])[1]
        for i, p in zip(kept, adjusted, strict=True):
            out[i] = float(p)
    return out
