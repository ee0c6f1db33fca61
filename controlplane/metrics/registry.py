"""Metrics providers by name: a guardrail's `provider` picks one.  A new provider is a module
with a class that has `query(guardrail, variables) -> Measurement` and one line in
`FACTORIES`.  An unknown name is refused with the known ones listed, never replaced by a
default (Flagger falls back to Istio silently; Argo Rollouts errors, as here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controlplane.metrics.prometheus import PrometheusProvider
from controlplane.metrics.protocol import Counts, Measurement, MetricsProvider
from controlplane.metrics.web import WebProvider
from experiments.errors import InvalidInputError
from experiments.spec_rollout import OperationalGuardrail


@dataclass(frozen=True)
class ProviderConfig:
    """What the controller's or the service's settings say about reading metrics."""

    prometheus_url: str | None = None
    mesh: str = "envoy"
    window: str = "30s"
    timeout: float = 5.0


def _prometheus(config: ProviderConfig) -> MetricsProvider:
    if not config.prometheus_url:
        raise InvalidInputError(
            "no Prometheus URL configured (--prometheus, ABMESH_PROMETHEUS_URL)"
        )
    return PrometheusProvider(config.prometheus_url, config.mesh, config.window, config.timeout)


FACTORIES: dict[str, Callable[[ProviderConfig], MetricsProvider]] = {
    "prometheus": _prometheus,
    "web": lambda config: WebProvider(config.window, config.timeout),
}


def make_provider(name: str, config: ProviderConfig) -> MetricsProvider:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown metrics provider {name!r}; known: {', '.join(sorted(FACTORIES))}"
        ) from None
    return factory(config)


class Providers:
    """Every provider a spec may name, each built on first use; itself a MetricsProvider that
    hands each guardrail to its own.  A provider that cannot be built (an unknown name, no
    URL) answers with an error measurement that says why."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._made: dict[str, MetricsProvider | str] = {}

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        made = self._provider(guardrail.provider)
        if isinstance(made, str):
            return Measurement.error(made)
        return made.query(guardrail, variables)

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        made = self._provider(guardrail.provider)
        if isinstance(made, str):
            return Counts.error(made)
        return made.counters(guardrail, variables, at)

    def _provider(self, name: str) -> MetricsProvider | str:
        """The provider by name, built once; or why it cannot be built."""
        made = self._made.get(name)
        if made is None:
            try:
                made = make_provider(name, self.config)
            except InvalidInputError as exc:
                made = str(exc)
            self._made[name] = made
        return made
