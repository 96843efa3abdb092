"""Reading a release from ``update_release_url``: small files whole, the artifact resumably into a ``.part`` file.

``http(s)://`` goes through httpx (timeouts, a bounded number of redirects), ``file://``
reads the directory directly (a mirror on disk, tests). Every size is bounded before
anything is kept, and every failure is one line naming the URL. Nothing read here is
trusted: :mod:`banger_updater.verify` checks it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

from banger_core.common.errors import BangerError

if TYPE_CHECKING:
    import httpx

    from banger_hookspecs import Progress

CHUNK = 1 << 16
CONNECT_TIMEOUT = 10.0
#: Seconds without a byte before a transfer is given up (a retried run resumes it).
READ_TIMEOUT = 60.0
MAX_REDIRECTS = 5


def _retry_hint(resumable: bool) -> str:
    return "run it again to resume the download" if resumable else "check update_release_url and the network"


class ReleaseSource:
    """The release directory at ``base_url``; close it (or use ``with``) to release the HTTP client."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
            raise BangerError(
                f"update_release_url {base_url!r} is not an http://, https:// or file:// URL: fix it in config.toml"
            )
        if parts.query or parts.fragment:
            raise BangerError(f"update_release_url {base_url!r} has a query or fragment: give the release directory")
        self.base_url = base_url.rstrip("/")
        self._directory = Path(unquote(parts.path)) if parts.scheme == "file" else None
        if self._directory is not None and (parts.netloc not in ("", "localhost") or not self._directory.is_absolute()):
            raise BangerError(f"update_release_url {base_url!r}: a file:// URL names a local path: file:///abs/dir")
        self._client: httpx.Client | None = None

    def __enter__(self) -> ReleaseSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def url(self, relative: str) -> str:
        return f"{self.base_url}/{relative}"

    def _http(self) -> httpx.Client:
        import httpx

        if self._client is None:
            self._client = httpx.Client(
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                # The bytes as published: a Range then counts the file's own bytes, and nothing is inflated.
                headers={"User-Agent": "banger-update", "Accept-Encoding": "identity"},
            )
        return self._client

    def _local(self, relative: str) -> Path:
        assert self._directory is not None
        return self._directory / relative

    def read(self, relative: str, limit: int) -> bytes:
        """The file ``relative`` (below the base URL) whole; more than ``limit`` bytes is refused."""
        url = self.url(relative)
        if self._directory is not None:
            try:
                with self._local(relative).open("rb") as fh:
                    data = fh.read(limit + 1)
            except FileNotFoundError:
                raise BangerError(f"{url}: no such file: check update_release_url and the version") from None
            except OSError as exc:
                raise BangerError(f"cannot read {url}: {exc.strerror or exc}") from None
        else:
            data = self._read_http(url, limit)
        if len(data) > limit:
            raise BangerError(f"{url}: more than {limit} bytes, too large for what it should be: check the release")
        return data

    def _read_http(self, url: str, limit: int) -> bytes:
        import httpx

        try:
            with self._http().stream("GET", url) as answer:
                _check_status(answer, url, resumable=False)
                data = bytearray()
                for chunk in answer.iter_raw():
                    data += chunk
                    if len(data) > limit:
                        break
                return bytes(data)
        except httpx.HTTPError as exc:
            raise BangerError(f"cannot fetch {url}: {_reason(exc)}: {_retry_hint(False)}") from None

    def download(self, relative: str, part: Path, size: int, progress: Progress) -> None:
        """Make ``part`` hold the file's first ``size`` bytes, continuing what an earlier run left in it.

        Bytes already in ``part`` are asked for no more (an HTTP Range request); a server
        that ignores the range sends the whole file again and ``part`` restarts. More bytes
        than ``size`` is refused, and ``part`` removed: it cannot be the release's file.
        A transfer cut short leaves ``part`` for the next run.
        """
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        progress.advance(have, size)
        if have == size:
            return
        url = self.url(relative)
        try:
            if self._directory is not None:
                self._copy_local(relative, url, part, have, size, progress)
            else:
                self._download_http(url, part, have, size, progress)
        except OSError as exc:  # the local side: a full disk, a read-only file system
            raise BangerError(
                f"cannot write {part}: {exc.strerror or exc}: fix that, then run it again to resume"
            ) from None
        got = part.stat().st_size
        if got < size:
            raise BangerError(f"{url}: the transfer stopped at {got} of {size} bytes: {_retry_hint(True)}")

    def _copy_local(self, relative: str, url: str, part: Path, have: int, size: int, progress: Progress) -> None:
        try:
            source = self._local(relative).open("rb")
        except FileNotFoundError:
            raise BangerError(f"{url}: no such file: check update_release_url") from None
        except OSError as exc:
            raise BangerError(f"cannot read {url}: {exc.strerror or exc}") from None
        with source, _open_part(part, append=True) as out:
            source.seek(have)
            _copy(source.read, out, url, part, have, size, progress)

    def _download_http(self, url: str, part: Path, have: int, size: int, progress: Progress) -> None:
        import httpx

        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._http().stream("GET", url, headers=headers) as answer:
                resumed = have > 0 and answer.status_code == 206
                if resumed and not answer.headers.get("content-range", "").startswith(f"bytes {have}-"):
                    raise BangerError(f"{url}: the server resumed at another offset than byte {have}: run it again")
                if not resumed:
                    _check_status(answer, url, resumable=True)
                    have = 0
                    progress.advance(0, size)
                # As they arrive (no chunk size: httpx would hold up to a chunk back, lost when the transfer is cut).
                chunks = answer.iter_raw()
                with _open_part(part, append=resumed) as out:
                    _copy(lambda _n: next(chunks, b""), out, url, part, have, size, progress)
        except httpx.HTTPError as exc:
            raise BangerError(f"cannot fetch {url}: {_reason(exc)}: {_retry_hint(True)}") from None


def _open_part(part: Path, *, append: bool) -> BinaryIO:
    """The ``.part`` file for writing, never through a symlink (its directory is root's, but be exact)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(part, flags, 0o600), "wb")


def _copy(
    read: Callable[[int], bytes], out: BinaryIO, url: str, part: Path, have: int, size: int, progress: Progress
) -> None:
    """Append chunks from ``read(n)`` to ``out`` until it returns nothing; never more than ``size`` in all."""
    while chunk := read(CHUNK):
        if have + len(chunk) > size:
            out.close()
            part.unlink(missing_ok=True)
            raise BangerError(
                f"{url}: more bytes than the {size} the signed manifest lists: the file is not the release's"
            )
        out.write(chunk)
        have += len(chunk)
        progress.advance(have, size)


def _check_status(answer: httpx.Response, url: str, *, resumable: bool) -> None:
    if answer.status_code == 200:
        return
    if answer.status_code == 404:
        raise BangerError(f"{url}: not found (HTTP 404): check update_release_url and the version")
    raise BangerError(f"{url}: HTTP {answer.status_code}: {_retry_hint(resumable)}")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
