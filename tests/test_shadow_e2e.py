"""The shadow phase end to end with real parts: Envoy mirrors the stable model's requests to the
candidate (routes written by the controller, a process of its own), both toy models post their
predictions to abmesh's service, and the controller gates the rollout on the comparison.

(a) a candidate that flips 3 % of labels is stopped against a 1 % tolerance within 5,000
pairs, never having answered a client, and the report (drawn in Chromium) shows the
comparison at every look and the score ECDFs; (b) an identical candidate passes the shadow phase and
goes on to the next one.  Timings are printed, not asserted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assignment.auth import Role
from experiments.localstack import RolloutStack, start_rollout_stack
from experiments.report import build_report
from experiments.report_html import render_html
from experiments.store import Store, open_store
from tests.browser import chart_drawn, chromium, rendered
from tests.rollout_support import Traffic, controller, moves, spec_doc, start
from tests.servers import TOKENS, start_service

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RolloutStack]:
    s = start_rollout_stack(tmp_path)
    yield s
    s.stop()


def shadow_rollout(stack: RolloutStack, tmp_path: Path, candidate: dict[str, float]) -> Any:
    """Run a [shadow 100 %, promote] rollout with the candidate model configured as given until
    the shadow phase ends; (the store, the move that ended it, the clients' models)."""
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    service = start_service(url, tmp_path)
    shadow = {"kind": "shadow", "percent": 100, "max_duration_s": 600,
              "tolerance": {"disagreement": 0.01, "score_shift": 0.02, "distribution": 0.1}}
    start(store, spec_doc([shadow, {"kind": "promote"}]))
    for model, variant, extra in (("v1", "control", {}), ("v2", "treatment", candidate)):
        stack.set_model(model, report_to=service.url, experiment="ranker-v2", variant=variant,
                        token=TOKENS[Role.WRITER], **extra)
    traffic = Traffic(stack.front)
    ctl = controller(url, stack, tmp_path)
    try:
        ended = wait_for_either(store, ("rollback", "promote", "phase"), timeout=240)
    finally:
        ctl.stop()
        traffic.stop()
        service.stop()
    return store, ended, traffic.seen


def wait_for_either(store: Store, actions: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in moves(store) if e["action"] in actions]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no {actions} in {timeout} s: {moves(store)}")


def test_a_candidate_flipping_3_percent_of_labels_is_stopped(
    stack: RolloutStack, tmp_path: Path
) -> None:
    store, ended, models = shadow_rollout(stack, tmp_path, {"flip_rate": 0.03})
    try:
        assert ended["action"] == "rollback", ended
        assert "disagreement" in ended["what"]
        shadow = store.get_experiment("ranker-v2").status.rollout["shadow"]
        print(f"stopped after {shadow['pairs']} pairs: {ended['what']}")
        assert shadow["pairs"] <= 5000
        answers = [m for _, m in models]
        assert set(answers) <= {"v1", "error"}  # no client ever got the candidate's answer
        assert answers.count("v1") > 0.99 * len(answers)
        report = build_report(store, "ranker-v2")
        section = report["shadow"]
        assert section["verdict"]["status"] == "fail"
        assert section["looks"][-1]["pairs"] == section["verdict"]["pairs"]
        assert section["ecdf"]["stable"] == section["ecdf"]["candidate"]  # flips, not scores
        if chromium() is not None:
            page = tmp_path / "report.html"
            page.write_text(render_html(report))
            dom, errors = rendered(page)
            for chart in ("chart-shadow-disagreement", "chart-shadow-score_shift",
                          "chart-shadow-distribution", "chart-shadow-ecdf"):  # fmt: skip
                assert chart_drawn(dom, chart), chart
            assert not errors, errors
    finally:
        store.close()


def test_an_identical_candidate_passes_the_shadow_phase(
    stack: RolloutStack, tmp_path: Path
) -> None:
    store, ended, models = shadow_rollout(stack, tmp_path, {})
    try:
        assert ended["action"] == "promote", ended
        assert ended["what"].startswith("shadow passed")
        shadow = store.get_experiment("ranker-v2").status.rollout["shadow"]
        print(f"passed after {shadow['pairs']} pairs: {ended['what']}")
        before = {m for sent, m in models if sent < ended["at"]}
        assert before <= {"v1", "error"}  # the candidate answered nobody before it passed
        assert ended["weights"] == {"treatment": 100}
        looks = build_report(store, "ranker-v2")["shadow"]["looks"]
        assert len(looks) >= 2  # a look per tick, kept for the report
        assert [look["pairs"] for look in looks] == sorted(look["pairs"] for look in looks)
    finally:
        store.close()
