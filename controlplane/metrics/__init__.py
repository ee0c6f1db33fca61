"""Metrics providers for the operational guardrails: the protocol, the registry, and the
spec's guardrails read through them.  One module per provider (prometheus, web)."""

from controlplane.metrics.outcome import Reading
from controlplane.metrics.protocol import Counts, Measurement, MetricsProvider, Phase
from controlplane.metrics.reading import Tests, read_guardrails, variables_for
from controlplane.metrics.registry import FACTORIES, ProviderConfig, Providers, make_provider

__all__ = [
    "FACTORIES",
    "Counts",
    "Measurement",
    "MetricsProvider",
    "Phase",
    "ProviderConfig",
    "Providers",
    "Reading",
    "Tests",
    "make_provider",
    "read_guardrails",
    "variables_for",
]
