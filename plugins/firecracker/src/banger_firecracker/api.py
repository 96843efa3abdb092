"""Firecracker's HTTP API over its Unix socket, with errors as one-line user sentences."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


class FirecrackerApiError(Exception):
    """Firecracker answered an API call with an error, or did not answer."""


class FirecrackerApi:
    """A client for the API socket at ``socket_path``.

    Example::

        with FirecrackerApi(run_dir / "fc.sock") as api:
            api.put("/machine-config", {"vcpu_count": 2, "mem_size_mib": 1024})
            state = api.get("/")["state"]
    """

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://localhost", timeout=timeout
        )

    def __enter__(self) -> FirecrackerApi:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise FirecrackerApiError(
                f"Firecracker API at {self.socket_path} did not answer {method} {path}: {exc}"
            ) from None
        if response.status_code >= 300:
            raise FirecrackerApiError(f"Firecracker refused {method} {path}: {_fault(response)}")
        return response

    def put(self, path: str, body: dict[str, Any]) -> int:
        """PUT ``body`` to ``path`` and return the status (Firecracker answers 204 on success)."""
        return self._request("PUT", path, body).status_code

    def get(self, path: str) -> Any:
        """GET ``path`` and return the decoded JSON."""
        response = self._request("GET", path)
        try:
            return response.json()
        except ValueError:
            raise FirecrackerApiError(f"Firecracker sent invalid JSON for GET {path}") from None


def _fault(response: httpx.Response) -> str:
    """Firecracker's ``fault_message``, on one line, or the status line when there is none."""
    try:
        message = response.json().get("fault_message")
    except (ValueError, AttributeError):
        message = None
    text = str(message) if message else f"HTTP {response.status_code} {response.reason_phrase}"
    return " ".join(text.split())
