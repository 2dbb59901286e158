"""The OpenAPI 3 document, generated from the route declarations and their schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from services.gateway import schemas
from services.gateway.api import ROUTES

DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    202: "Accepted: the job is pending",
    400: "Invalid input (validation_failed, invalid_json, unknown_driver, ...)",
    401: "No valid bearer token",
    403: "The token's role does not allow this",
    404: "No such resource in the caller's tenant",
    409: "The current state does not allow this",
    422: "The source or target cannot be used",
    503: "A dependency is unavailable",
}


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="Coffer",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Backup and restore platform: HTTP API of the gateway."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("ErrorResponse", schema=schemas.ErrorResponse)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.action.replace(".", "_") + "_" + route.method.lower(),
            "tags": [route.tag],
            "responses": {
                str(route.status): {
                    "description": DESCRIPTIONS.get(route.status, "OK"),
                    **(
                        {"content": {"application/json": {"schema": route.response}}}
                        if route.response
                        else {}
                    ),
                }
            },
        }
        codes = set(route.errors) | ({400} if route.body or route.query else set())
        if route.roles is not None:
            operation["security"] = [{"bearer": []}]
            operation["x-roles"] = list(route.roles)
            codes |= {401, 403}
        for code in sorted(codes):
            operation["responses"][str(code)] = {
                "description": DESCRIPTIONS.get(code, "Error"),
                "content": {"application/json": {"schema": "ErrorResponse"}},
            }
        params = [
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
            for name in _path_params(route.openapi_path)
        ]
        if params:
            operation["parameters"] = params
        if route.query is not None:
            operation.setdefault("parameters", []).append({"in": "query", "schema": route.query})
        if route.body is not None:
            operation["requestBody"] = {
                "required": not route.body_optional,
                "content": {"application/json": {"schema": route.body}},
            }
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _path_params(path: str) -> list[str]:
    import re

    return re.findall(r"{(\w+)}", path)
