"""The `kserve` router: the candidate's share of a KServe InferenceService
(serving.kserve.io/v1beta1; schema from KServe v0.20.0, tests/schemas).

KServe splits between two arms only: the stable model and one candidate, so a plan with more
arms is refused.  It splits by weight alone: each request is drawn afresh, so a unit does not
stay on its arm (`sticky = False`; the controller gives such targets no A/B phase).  It cannot
mirror, so a shadow phase's plan is refused too.  Which of the two modes the object is in comes
from its `serving.kserve.io/deploymentMode` annotation, else from `status.deploymentMode`:

- Knative (formerly Serverless): `spec.predictor.canaryTrafficPercent` is the candidate's
  percent.  KServe gives it to the latest created revision of the predictor and the rest to the
  previously rolled-out one, so the candidate is whatever revision the owner's last predictor
  change created.  Weight goes only to a Ready revision: while
  `status.components.predictor.latestCreatedRevision` is not the `latestReadyRevision`, a share
  above 0 is refused, naming the revision; the stable revision is read from `traffic[]`.
  Promotion removes the field (the latest revision takes everything, as KServe documents);
  rollback sets it to 0.
- Standard (formerly RawDeployment; KServe v0.20.0 added canaries for it): `spec.canary` lists
  canary predictors, each with a `trafficPercent`.  The candidate is the entry whose
  `predictor.name` is the candidate's model name (`rollout.target.models`, else its destination
  host); the owner creates that entry, abmesh sets its `trafficPercent` (0 on rollback, 100 on
  promotion) and sends the rest of the list unchanged.  Readiness comes from
  `status.canaryStatuses[].ready`.  Folding the canary into `spec.predictor` after a promotion
  (KServe's restart-free way) rewrites the owner's predictor, so it is left to the owner.

The object must exist, is written as a merge patch carrying its resourceVersion (409: read
again, retry), and is skipped when unchanged (controlplane.routing.kube).
"""

from __future__ import annotations

from typing import Any

from controlplane.routing.kube import ModelRouter
from controlplane.routing.plan import RoutePlan
from controlplane.routing.routers import RouterError
from experiments.errors import InvalidInputError

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KNATIVE = ("Knative", "Serverless")
STANDARD = ("Standard", "RawDeployment")


class KServeRouter(ModelRouter):
    name = "kserve"
    sticky = mirrors = False
    group, version = "serving.kserve.io", "v1beta1"
    plural, kind = "inferenceservices", "InferenceService"

    def _candidate(self, plan: RoutePlan) -> tuple[str, int]:
        """The candidate variant and its percent."""
        arms = [v for v, _ in plan.weights]
        if len(arms) != 2 or self.control not in arms:
            raise InvalidInputError(
                f"kserve router: an InferenceService splits between the stable revision"
                f" ({self.control!r}) and one candidate; experiment {plan.experiment!r} has arms"
                f" {arms}"
            )
        if plan.mirror is not None:
            raise InvalidInputError(
                f"kserve router: an InferenceService cannot mirror requests; experiment"
                f" {plan.experiment!r} has a shadow phase (use a mesh router or seldon)"
            )
        (candidate,) = (v for v in arms if v != self.control)
        return candidate, plan.weight(candidate)

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        candidate, percent = self._candidate(plan)
        mode = _mode(current)
        if mode in STANDARD:
            model = self.model(plan, candidate)
            return {"canary": self._canaries(current, model, percent)}
        if mode not in KNATIVE:
            raise RouterError(
                f"{self._where()}: deployment mode {mode!r} has no canary traffic split"
                f" (one of {', '.join(KNATIVE + STANDARD)} is needed; annotation"
                f" {MODE_ANNOTATION})"
            )
        if percent > 0:
            self._check_revision(current, whole=percent == 100)
        # null removes the field in a merge patch: the latest revision takes everything.
        return {"predictor": {"canaryTrafficPercent": None if percent == 100 else percent}}

    def _check_revision(self, current: dict[str, Any], *, whole: bool) -> None:
        """Refuse weight for a candidate revision that is not Ready, or that does not exist
        (the latest created one is the stable one: the owner has not changed the predictor)."""
        predictor = (current.get("status") or {}).get("components", {}).get("predictor") or {}
        created = predictor.get("latestCreatedRevision")
        ready = predictor.get("latestReadyRevision")
        stable = next(
            (t.get("revisionName") for t in predictor.get("traffic", [])
             if not t.get("latestRevision")),
            predictor.get("latestRolledoutRevision"),
        )  # fmt: skip
        if created is None:
            raise RouterError(f"{self._where()} reports no predictor revision yet")
        if created != ready:
            raise RouterError(
                f"{self._where()}: revision {created} is not Ready (latest ready: {ready});"
                f" it gets no traffic until it is; traffic stays on"
                f" {stable or 'the rolled-out revision'}"
            )
        if not whole and created == predictor.get("latestRolledoutRevision"):
            raise RouterError(
                f"{self._where()}: revision {created} is already the rolled-out one: there is"
                " no candidate revision (change the predictor to create one)"
            )

    def _canaries(self, current: dict[str, Any], model: str, percent: int) -> list[dict[str, Any]]:
        canaries = list(current.get("spec", {}).get("canary") or [])
        names = [str(c.get("predictor", {}).get("name")) for c in canaries]
        if model not in names:
            raise RouterError(
                f"{self._where()} has no canary with predictor.name {model!r} (has {names}):"
                " add it to spec.canary first"
            )
        others = [n for n, c in zip(names, canaries, strict=True)
                  if n != model and c.get("trafficPercent")]  # fmt: skip
        if others:
            raise RouterError(
                f"{self._where()}: canaries {others} also take traffic, which the plan does not"
                " account for: set their trafficPercent to 0 or remove them"
            )
        if percent > 0:
            status: dict[str, Any] = next(
                (s for s in (current.get("status") or {}).get("canaryStatuses", [])
                 if s.get("name") == model),
                {},
            )  # fmt: skip
            if not status.get("ready"):
                raise RouterError(
                    f"{self._where()}: canary {model!r} is not Ready; it gets no traffic until"
                    " it is"
                )
        return [
            {**c, "trafficPercent": percent} if n == model else c
            for n, c in zip(names, canaries, strict=True)
        ]

    def _same(self, current: dict[str, Any], spec: dict[str, Any]) -> bool:
        live = current.get("spec", {})
        if "canary" in spec:
            return bool(live.get("canary") == spec["canary"])
        wanted = spec["predictor"]["canaryTrafficPercent"]
        return bool(live.get("predictor", {}).get("canaryTrafficPercent") == wanted)


def _mode(current: dict[str, Any]) -> str | None:
    annotations = current.get("metadata", {}).get("annotations") or {}
    mode = annotations.get(MODE_ANNOTATION) or (current.get("status") or {}).get("deploymentMode")
    return None if mode is None else str(mode)
