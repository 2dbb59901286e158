"""The one wrapper every HTTP endpoint goes through.

``@api(...)`` declares a route once and from that declaration: registers the nameko
``http`` entrypoint, authenticates the bearer token, checks the role, parses and
validates the JSON body and the query string with marshmallow, maps any
:class:`~shared.errors.CofferError` to ``{"error": {code, message, details}}`` with its
status, emits exactly one audit event per request (every refusal, and every success
of an operation that changes or reads out data), and feeds the OpenAPI document.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import eventlet
from marshmallow import Schema, ValidationError
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from shared.errors import (
    CofferError,
    Forbidden,
    InvalidJSON,
    ServiceUnavailable,
    ValidationFailed,
    error_payload,
)
from shared.messaging import BROKER_ERRORS
from shared.principal import Principal

log = logging.getLogger(__name__)

#: An RPC that takes longer than this gives 503, not a hung request.
RPC_TIMEOUT = 30.0
MAX_BODY = 1024 * 1024


@dataclass
class Route:
    method: str
    path: str
    summary: str
    action: str
    roles: tuple[str, ...] | None
    body: type[Schema] | None
    query: type[Schema] | None
    response: type[Schema] | None
    status: int
    audit_success: bool
    body_optional: bool
    tag: str
    errors: tuple[int, ...]

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)


ROUTES: list[Route] = []


@dataclass
class Call:
    """What a handler receives: who asks, the validated input, and audit hooks."""

    request: Request
    principal: Principal | None
    body: dict[str, Any]
    query: dict[str, Any]
    request_id: str
    resource_id: str | None = None
    tenant: str | None = None
    audit_details: dict[str, Any] = field(default_factory=dict)

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal

    @property
    def p(self) -> dict[str, Any]:
        """The principal as the catalog RPC takes it."""
        return self.who.to_dict()


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(payload, default=str),
        status=status,
        mimetype="application/json",
        headers=headers or {},
    )


def error_response(exc: BaseException, request_id: str) -> Response:
    status = exc.http_status if isinstance(exc, CofferError) else 500
    headers = {"X-Request-Id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="coffer"'
    return json_response({"error": error_payload(exc)}, status, headers)


def _load(schema: type[Schema], data: Any, where: str) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema().load(data)
    except ValidationError as exc:
        raise ValidationFailed(f"invalid {where}", exc.normalized_messages()) from exc
    return loaded


def _query_dict(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in request.args.lists():
        out[key] = values[0] if len(values) == 1 else values
    return out


def _json_body(request: Request) -> Any:
    if request.content_length and request.content_length > MAX_BODY:
        raise ValidationFailed("request body too large", {"body": [f"at most {MAX_BODY} bytes"]})
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidJSON("the request needs a JSON body", {"body": ["empty"]})
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(
            f"the request body is not valid JSON: {exc}", {"body": [str(exc)]}
        ) from exc


def api(
    method: str,
    path: str,
    *,
    summary: str,
    action: str,
    roles: tuple[str, ...] | None,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    response: type[Schema] | None = None,
    status: int = 200,
    audit_success: bool = False,
    body_optional: bool = False,
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Any]:
    """``roles=None``: no authentication (health, OpenAPI)."""
    route = Route(
        method=method,
        path=path,
        summary=summary,
        action=action,
        roles=roles,
        body=body,
        query=query,
        response=response,
        status=status,
        audit_success=audit_success,
        body_optional=body_optional,
        tag=action.split(".")[0],
        errors=errors,
    )
    ROUTES.append(route)

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def handler(self: Any, request: Request, **path_args: Any) -> Response:
            return self._handle(route, fn, request, path_args)

        return http(method, path)(handler)

    return decorate


class ApiMixin:
    """The request pipeline; the gateway service class mixes it in."""

    catalog_rpc: Any
    audit: Any
    settings: Any

    def _authenticate(self, request: Request) -> Principal:
        from shared.errors import Unauthenticated

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("send 'Authorization: Bearer <token>'")
        token = token.strip()
        admin = self.settings.admin_token
        if admin is not None:
            import hmac

            if hmac.compare_digest(token.encode(), admin.encode()):
                return Principal(id="admin", role="admin", tenant=None, kind="admin", name="admin")
        with eventlet.Timeout(RPC_TIMEOUT, ServiceUnavailable("the catalog did not answer")):
            return Principal.from_dict(self.catalog_rpc.authenticate(token))

    def _handle(
        self, route: Route, fn: Callable[..., Any], request: Request, path_args: dict[str, Any]
    ) -> Response:
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        call = Call(request=request, principal=None, body={}, query={}, request_id=request_id)
        call.resource_id = next(iter(path_args.values()), None)
        try:
            if route.roles is not None:
                call.principal = self._authenticate(request)
                if call.principal.role not in route.roles:
                    raise Forbidden(
                        f"role {call.principal.role!r} may not {route.summary.lower()}",
                        {"required": list(route.roles)},
                    )
            if route.query is not None:
                call.query = _load(route.query, _query_dict(request), "query parameters")
            if route.body is not None:
                empty = not request.get_data(cache=True).strip()
                payload = {} if (route.body_optional and empty) else _json_body(request)
                if not isinstance(payload, dict):
                    raise ValidationFailed(
                        "the body must be a JSON object", {"body": ["not an object"]}
                    )
                call.body = _load(route.body, payload, "request body")
            with eventlet.Timeout(
                RPC_TIMEOUT, ServiceUnavailable("a Coffer service did not answer in time")
            ):
                result = fn(self, call, **path_args)
        except Exception as exc:
            if isinstance(exc, BROKER_ERRORS):
                log.warning("%s %s: the broker is unreachable: %s", route.method, route.path, exc)
                exc = ServiceUnavailable(
                    "the message broker is unreachable; retry later", {"dependency": "broker"}
                )
            elif not isinstance(exc, CofferError):
                log.exception("%s %s failed", route.method, route.path)
            self._audit(route, call, exc)
            return error_response(exc, request_id)
        if route.audit_success:
            self._audit(route, call, None)
        if isinstance(result, Response):
            result.headers["X-Request-Id"] = request_id
            return result
        code = route.status
        if isinstance(result, tuple):
            code, result = result
        return json_response(result, code, {"X-Request-Id": request_id})

    def _audit(self, route: Route, call: Call, exc: BaseException | None) -> None:
        if exc is None:
            outcome = "success"
        elif isinstance(exc, CofferError) and exc.http_status in (401, 403):
            outcome = "denied"
        else:
            outcome = "failure"
        who = call.principal
        details: dict[str, Any] = {
            "method": route.method,
            "path": call.request.path,
            **call.audit_details,
        }
        if exc is not None:
            details["error"] = error_payload(exc)
        self.audit.record(
            route.action,
            resource={"type": route.tag, "id": call.resource_id},
            outcome=outcome,
            tenant=call.tenant or (who.tenant if who else None),
            actor=who.actor() if who else {"type": "anonymous", "id": call.request.remote_addr},
            request_id=call.request_id,
            details=details,
        )
