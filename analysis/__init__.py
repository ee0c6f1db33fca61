"""Pure statistics on per-arm sufficient statistics: no I/O, no globals, imports nothing of ours.

So far: `ArmStats`, the fixed-horizon references (`welch_ttest`, `proportions_ztest`), the
always-valid `msprt`, `confidence_sequence` and `SequentialMonitor`, `cuped`, `srm_test`,
`sample_size`/`power` and `adjust_pvalues` (Holm, Benjamini–Hochberg).
Conventions: `a` is control, `b` treatment, effects are b − a; see
../shared/stats-methods.md.
"""

from analysis.cuped import cuped, pooled_theta
from analysis.fixed import proportions_ztest, welch_ttest
from analysis.msprt import msprt
from analysis.multiple import adjust_pvalues
from analysis.power import power, sample_size
from analysis.results import InferenceResult
from analysis.sequences import SequentialMonitor, confidence_sequence
from analysis.srm import SRMResult, srm_test
from analysis.stats import ArmStats

__all__ = [
    "ArmStats",
    "InferenceResult",
    "SRMResult",
    "SequentialMonitor",
    "adjust_pvalues",
    "confidence_sequence",
    "cuped",
    "msprt",
    "pooled_theta",
    "power",
    "proportions_ztest",
    "sample_size",
    "srm_test",
    "welch_ttest",
]
