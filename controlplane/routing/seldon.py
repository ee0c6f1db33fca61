"""The `seldon` router: a Seldon Core 2 `Experiment` (mlops.seldon.io/v1alpha1; schema from
seldon-core v2.10.2, tests/schemas).

Seldon splits requests between models by weight (`spec.candidates`, each `{name, weight}`,
shares relative to their sum) on the endpoint of `spec.default`, and mirrors a percent of them
to `spec.mirror` `{name, percent}` without returning its answers: the shadow phase.  abmesh
writes those three fields from the plan's default-route weights and mirror; `resourceType`
(model or pipeline) and everything else stay the owner's.

Variants map to Seldon model (or pipeline) names through `rollout.target.models`
(variant -> name); a variant it leaves out is named by its destination host.  `default` is the
control's name, so the split happens on the endpoint clients already call, and every arm stays
among the candidates (at weight 0 when it has none), as Seldon requires of `default`.  During a
shadow phase the mirrored arm is the mirror and not a candidate: Seldon refuses a model that is
both.  Seldon takes an integer percent, so a finer mirror is refused.

The split is per request (Seldon's `x-seldon-route` replays one request's path, not a unit's
arm), so `sticky = False`: no A/B phase on this target.
"""

from __future__ import annotations

from typing import Any

from controlplane.routing.kube import ModelRouter
from controlplane.routing.plan import RoutePlan
from experiments.errors import InvalidInputError

FIELDS = ("default", "candidates", "mirror")


class SeldonRouter(ModelRouter):
    name = "seldon"
    sticky = False
    group, version, plural, kind = "mlops.seldon.io", "v1alpha1", "experiments", "Experiment"

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        names = {v: self.model(plan, v) for v, _ in plan.weights}
        if len(set(names.values())) < len(names):
            raise InvalidInputError(
                f"seldon router: the arms of {plan.experiment!r} must be different models, got"
                f" {names} (set rollout.target.models)"
            )
        mirror = plan.mirror
        if mirror is not None and mirror.percent != int(mirror.percent):
            raise InvalidInputError(
                f"seldon router: Seldon mirrors a whole percent of requests, not"
                f" {mirror.percent:g} (experiment {plan.experiment!r})"
            )
        return {
            "default": names[self.control],
            "candidates": [
                {"name": names[v], "weight": w}
                for v, w in plan.weights
                if mirror is None or v != mirror.variant
            ],
            # null removes the field in a merge patch: no mirror once the shadow phase is over.
            "mirror": None
            if mirror is None
            else {"name": names[mirror.variant], "percent": int(mirror.percent)},
        }

    def _same(self, current: dict[str, Any], spec: dict[str, Any]) -> bool:
        live = current.get("spec", {})
        return all(live.get(key) == spec[key] for key in FIELDS)
