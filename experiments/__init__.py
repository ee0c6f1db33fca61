"""The domain: experiment specs, stores (and, in later parts, lifecycle, controller, routers)."""

from experiments.errors import AbmeshError, ConflictError, NotFoundError, SpecError, StoreError
from experiments.loader import EXAMPLES_DIR, dump_spec, load_spec, parse_spec
from experiments.spec import ExperimentSpec, HashVersion, Variant

__all__ = [
    "EXAMPLES_DIR",
    "AbmeshError",
    "ConflictError",
    "ExperimentSpec",
    "HashVersion",
    "NotFoundError",
    "SpecError",
    "StoreError",
    "Variant",
    "dump_spec",
    "load_spec",
    "parse_spec",
]
