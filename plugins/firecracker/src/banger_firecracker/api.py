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

    def patch(self, path: str, body: dict[str, Any]) -> int:
        """PATCH ``body`` to ``path`` and return the status (204 on success)."""
        return self._request("PATCH", path, body).status_code

    # -- snapshots (docs/warm-start.md) -------------------------------------

    def pause(self) -> None:
        """Pause the vCPUs (``PATCH /vm``): a snapshot can only be taken of a paused microVM."""
        self.patch("/vm", {"state": "Paused"})

    def resume(self) -> None:
        """Resume a paused (or just loaded) microVM."""
        self.patch("/vm", {"state": "Resumed"})

    def create_snapshot(self, state_file: Path, memory_file: Path) -> None:
        """Write a full snapshot of the paused microVM: device/vCPU state and all of guest memory.

        Firecracker flushes the block devices first; the caller copies the disks beside the files.
        """
        self.put(
            "/snapshot/create",
            {"snapshot_type": "Full", "snapshot_path": str(state_file), "mem_file_path": str(memory_file)},
        )

    def load_snapshot(self, state_file: Path, memory_file: Path, *, resume: bool) -> None:
        """Load a snapshot into this fresh Firecracker process (nothing else configured yet).

        Memory is mapped from ``memory_file`` copy-on-write (so it must stay unchanged while the
        microVM lives); the disks and tap the snapshot names must exist at the same paths.
        On failure Firecracker ends the process.
        """
        self.put(
            "/snapshot/load",
            {
                "snapshot_path": str(state_file),
                "mem_backend": {"backend_type": "File", "backend_path": str(memory_file)},
                "resume_vm": resume,
            },
        )

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
