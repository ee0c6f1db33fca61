"""Pure statistics on per-arm sufficient statistics: no I/O, no globals.  Of abmesh it reads
only the spec's types (for `decide`).

`ArmStats`; the fixed-horizon references (`welch_ttest`, `proportions_ztest`); the always-valid
`msprt`, `confidence_sequence` and `SequentialMonitor`; Lan–DeMets `gst_boundaries`; `srm_test`
and `sequential_srm`; `cuped`; `ratio_arm` (delta method); `sample_size`/`power`;
`adjust_pvalues` (Holm, Benjamini–Hochberg); `decide`, which turns them into a Decision; and
`analyse_segments`, the same comparisons per segment with false-discovery control.
Conventions: `a` is control, `b` treatment, effects are b − a; see docs/statistics.md §1.
"""

from analysis.cuped import cuped, pooled_theta
from analysis.decide import decide, decide_many
from analysis.decision import Comparison, Decision, DecisionState, GuardrailCheck, Status
from analysis.fixed import proportions_ztest, welch_ttest
from analysis.gst import GSTBoundaries, classical_constant, gst_boundaries, rejection_probability
from analysis.guardrails import Threshold
from analysis.inputs import ExperimentStats
from analysis.msprt import msprt
from analysis.multiple import adjust_pvalues
from analysis.power import power, sample_size
from analysis.ratio import ratio_arm
from analysis.results import InferenceResult
from analysis.segment_result import SegmentAnalysis, SegmentState
from analysis.segments import analyse_segments
from analysis.sequences import SequentialMonitor, confidence_sequence
from analysis.srm import SequentialSRMResult, SRMResult, sequential_srm, srm_test
from analysis.stats import ArmStats

__all__ = [
    "ArmStats",
    "Comparison",
    "Decision",
    "DecisionState",
    "ExperimentStats",
    "GSTBoundaries",
    "GuardrailCheck",
    "InferenceResult",
    "SRMResult",
    "SegmentAnalysis",
    "SegmentState",
    "SequentialMonitor",
    "SequentialSRMResult",
    "Status",
    "Threshold",
    "adjust_pvalues",
    "analyse_segments",
    "classical_constant",
    "confidence_sequence",
    "cuped",
    "decide",
    "decide_many",
    "gst_boundaries",
    "msprt",
    "pooled_theta",
    "power",
    "proportions_ztest",
    "ratio_arm",
    "rejection_probability",
    "sample_size",
    "sequential_srm",
    "srm_test",
    "welch_ttest",
]
