"""Guardrail readings from any JSON endpoint, like Argo Rollouts' `web` metric provider.

`url` is a template with the same placeholders as PromQL (values URL-quoted), `json_path` a
dotted path into the answer where a number is a list index (`data.result.0.value.1`): a
small path language rather than a JSONPath dependency.  Header values name environment
variables as `${NAME}`; messages name a missing variable, never a value.  Any status outside
2xx is an error, as in Argo; a path that is not there, or null, is no data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from controlplane.metrics.protocol import Counts, Measurement, Phase, render
from experiments.spec_rollout import ENV_RE, OperationalGuardrail


class WebProvider:
    def __init__(self, window: str = "30s", timeout: float = 5.0) -> None:
        self.window, self.timeout = window, timeout

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        if guardrail.url is None or guardrail.json_path is None:
            return Measurement.error("the web provider needs a url and a json_path")
        quoted = {k: quote(v, safe="") for k, v in {"window": self.window, **variables}.items()}
        url = render(guardrail.url, quoted)
        headers, missing = {}, []
        for header, value in guardrail.headers.items():
            missing += [n for n in ENV_RE.findall(value) if n not in os.environ]
            headers[header] = ENV_RE.sub(lambda m: os.environ.get(m.group(1), ""), value)
        if missing:
            return Measurement.error(f"environment variable not set: {', '.join(missing)}")
        try:
            reply = httpx.get(url, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            # The exception text can quote the request, never the headers.
            return Measurement.error(f"{_where(url)}: {type(exc).__name__}")
        if not 200 <= reply.status_code < 300:
            return Measurement.error(f"{_where(url)} answered {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            return Measurement.error(f"{_where(url)} did not answer JSON")
        found, at = follow(body, guardrail.json_path)
        if at is not None:
            return Measurement(Phase.NO_DATA, message=f"no {at!r} in the answer of {_where(url)}")
        return Measurement.of(found, where=f" at {guardrail.json_path}")

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        return Counts.error("the web provider reads single values; a relative guardrail needs"
                            " counters (provider prometheus)")  # fmt: skip


def follow(document: object, path: str) -> tuple[object, str | None]:
    """The value at a dotted path and None, or (None, the first part that is not there)."""
    here = document
    for part in path.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            return None, part
    return here, None


def _where(url: str) -> str:
    """The URL without its query: a token passed as a parameter stays out of the message."""
    return url.split("?", 1)[0]
