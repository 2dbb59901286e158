"""A small HTTP client for the gateway that turns every failure into a :class:`CliError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from cli import exitcodes
from cli.config import Settings
from cli.errors import CliError, from_response

#: Seconds to connect, and to wait for an answer (the gateway gives up on RPC at 30 s).
TIMEOUT = (5.0, 60.0)


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "coffer-cli"

    @classmethod
    def from_settings(cls, settings: Settings, *, need_token: bool = True) -> Client:
        if need_token and not settings.token:
            raise CliError(
                "not_configured",
                f"no token for {settings.url}",
                exitcodes.AUTH,
            )
        return cls(settings.url, settings.token)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            resp = self.http.request(
                method, self.url + path, headers=self._headers(), timeout=TIMEOUT, **kwargs
            )
        except requests.Timeout as exc:
            raise CliError(
                "timeout", f"{self.url} did not answer in time", exitcodes.UNAVAILABLE
            ) from exc
        except requests.ConnectionError as exc:
            raise CliError(
                "unreachable", f"cannot connect to {self.url}", exitcodes.UNAVAILABLE
            ) from exc
        except requests.RequestException as exc:
            raise CliError("request_failed", str(exc), exitcodes.USAGE) from exc
        if resp.status_code >= 400:
            try:
                body: Any = resp.json()
            except ValueError:
                body = resp.text
            raise from_response(resp.status_code, body)
        return resp

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError as exc:
            raise CliError(
                "bad_answer",
                f"{method} {path} answered {resp.status_code} without JSON",
                exitcodes.SERVER_ERROR,
            ) from exc

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.json("GET", path, params=_clean(params))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.json("POST", path, json=body if body is not None else {})

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.json("PATCH", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.json("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.json("DELETE", path)

    @contextmanager
    def stream(self, path: str) -> Iterator[requests.Response]:
        resp = self.request("GET", path, stream=True)
        try:
            yield resp
        finally:
            resp.close()


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop unset filters so the API's defaults apply."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None and v != ""}
