"""The OpenAPI document describes this deployment as it answers, not only the route table.

FastAPI builds it from the routes; four things it cannot know are filled in here, so that
clients generated from it, and contract testers (schemathesis, see the README), see what the
service really does:

- an experiment body is an experiment spec (its JSON schema), not any object: the routes take
  a mapping so spec errors name their fields the way the CLI does (experiments.loader);
- security schemes the settings leave open are not required: the API key when
  ABMESH_API_KEY is unset, every token under --insecure;
- the ext_authz check answers every method, since Envoy forwards the original one;
- errors are JSON on every route, the HTML report's included.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from assignment.config import Settings
from assignment.routes.extauthz import PATH_PREFIX
from experiments.spec import ExperimentSpec

REF = "#/components/schemas/{model}"
EXTAUTHZ_PATH = PATH_PREFIX + "/{path}"
# What OpenAPI 3.1 can name; the check answers extension methods (PROPFIND, ...) too.
OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def describe(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """The `app.openapi` of this deployment: built once, on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            _spec_bodies(doc)
            _open_schemes(doc, settings)
            _every_method(doc)
            _json_errors(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    return openapi


def _spec_bodies(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    spec = ExperimentSpec.model_json_schema(ref_template=REF)
    for name, schema in spec.pop("$defs", {}).items():
        if schemas.setdefault(name, schema) != schema:
            raise RuntimeError(f"OpenAPI: two schemas named {name}")
    # PUT takes the name from the path: the body may leave it out.
    unnamed = copy.deepcopy(spec) | {"title": "ExperimentSpecChange"}
    unnamed["required"] = [field for field in spec["required"] if field != "name"]
    schemas["ExperimentSpec"], schemas["ExperimentSpecChange"] = spec, unnamed
    paths = doc["paths"]
    for operation, model in (
        (paths["/v1/experiments"]["post"], "ExperimentSpec"),
        (paths["/v1/experiments/{name}"]["put"], "ExperimentSpecChange"),
    ):
        body = operation["requestBody"]["content"]["application/json"]
        body["schema"] = {"$ref": REF.format(model=model)}


def _open_schemes(doc: dict[str, Any], settings: Settings) -> None:
    schemes: dict[str, Any] = doc["components"]["securitySchemes"]
    open_ = set(schemes) if settings.insecure else set()
    if settings.api_key is None:
        open_.add("apiKey")
    for name in open_:
        schemes.pop(name, None)
    for operations in doc["paths"].values():
        for operation in operations.values():
            needs = [r for r in operation.pop("security", []) if not set(r) & open_]
            if needs:
                operation["security"] = needs
            else:
                for status in ("401", "403"):
                    operation["responses"].pop(status, None)
    if not schemes:
        del doc["components"]["securitySchemes"]


def _every_method(doc: dict[str, Any]) -> None:
    operations = doc["paths"][EXTAUTHZ_PATH]
    check = operations["get"]
    for method in OPERATIONS:
        operations.setdefault(
            method, check | {"operationId": f"{check['operationId'].removesuffix('_get')}_{method}"}
        )


def _json_errors(doc: dict[str, Any]) -> None:
    """FastAPI files an error's schema under the route's media type (text/html)."""
    for operations in doc["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                content = response.get("content")
                if status[0] in "45" and content and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}
