"""A content-addressed blob cache: resumable downloads, verified before use, capped in size.

Layout under the plugin's cache directory::

    blobs/sha256/<hex>     a verified blob (read-only); its mtime is its last use
    blobs/partial/<hex>    a download in progress; the next attempt resumes it

A blob is only ever renamed into ``sha256/`` after its size and sha256 match
the descriptor, and is hashed again each time a pull uses it (a copy damaged
on disk is deleted and downloaded again). A partial download that
grew past its size, or whose content does not match at the end, is deleted:
a tampered or corrupt blob never stays anywhere. A download cut short keeps
its partial, and the next attempt (in this pull or the next) asks for the rest
with an HTTP ``Range`` request (a registry that ignores the range sends the
whole blob and the partial restarts); the complete file is hashed once.

:meth:`BlobCache.evict` keeps the cache under its cap, least recently used
first. One pull at a time holds :meth:`BlobCache.locked`, so no pull evicts or
rewrites a blob another is reading.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import httpx

from banger_hookspecs import Progress, SourceUnavailable
from banger_oci.reference import OciError
from banger_oci.registry import Descriptor

_CHUNK = 1 << 20
_PROGRESS_EVERY = 1 << 20
#: Tries within one pull; a try that is cut off mid-blob resumes where it stopped.
ATTEMPTS = 3


class BlobError(OciError):
    """A downloaded blob is not what its descriptor says."""


class BlobOpener(Protocol):
    """What the cache needs from a registry client."""

    def open_blob(self, digest: str, offset: int = 0) -> AbstractContextManager[httpx.Response]:
        """Stream blob ``digest`` from byte ``offset``."""


class BlobCache:
    """Verified blobs by digest under ``root``, at most ``max_bytes`` after :meth:`evict`."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._blobs = root / "sha256"
        self._partials = root / "partial"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache exclusively (blocking until free); pulls are serialized by it."""
        for directory in (self.root, self._blobs, self._partials):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def path(self, digest: str) -> Path:
        """Where the verified blob ``digest`` lives (whether or not it is there)."""
        return self._blobs / digest.removeprefix("sha256:")

    def partial_path(self, digest: str) -> Path:
        """Where an unfinished download of ``digest`` is kept."""
        return self._partials / digest.removeprefix("sha256:")

    def fetch(self, blob: Descriptor, opener: BlobOpener, progress: Progress, label: str) -> Path:
        """Return the verified local file of ``blob``, downloading (or resuming) it if needed.

        Raises:
            BlobError: the registry served more bytes than the descriptor says, or
                content with another digest; nothing of it is kept.
            SourceUnavailable: the download kept being cut off; the partial is kept
                for the next pull to resume.
        """
        final = self.path(blob.digest)
        if final.is_file():
            # Hashed again on every use: a cached file damaged on disk is fetched anew, never handed on.
            if final.stat().st_size == blob.size and _file_digest(final) == blob.digest:
                os.utime(final)  # the mtime is the LRU clock
                progress.advance(blob.size, blob.size)
                return final
            progress.log(f"{label}: the cached copy is damaged; downloading it again")
            final.unlink()
        partial = self.partial_path(blob.digest)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._download(blob, opener, partial, progress, label)
                break
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS:
                    have = partial.stat().st_size if partial.exists() else 0
                    raise SourceUnavailable(
                        f"{label}: the download stopped at {have} of {blob.size} bytes ({exc}); pull again to resume it"
                    ) from None
        digest = _file_digest(partial)
        if digest != blob.digest:
            partial.unlink()
            raise BlobError(
                f"{label}: the registry sent content with digest {digest} instead of {blob.digest}: "
                "refused as corrupt or tampered, nothing was kept"
            )
        partial.chmod(0o444)
        os.replace(partial, final)
        return final

    def _download(self, blob: Descriptor, opener: BlobOpener, partial: Path, progress: Progress, label: str) -> None:
        """Grow ``partial`` to the blob's size, from where it stands when the registry honours a range."""
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > blob.size:
            partial.unlink()
            offset = 0
        if offset == blob.size:
            return
        with opener.open_blob(blob.digest, offset) as response:
            resumed = response.status_code == 206 and response.headers.get("content-range", "").startswith(
                f"bytes {offset}-"
            )
            if offset and not resumed:
                if response.status_code == 416:  # the partial no longer fits what the registry has
                    partial.unlink()
                    return self._download(blob, opener, partial, progress, label)
                offset = 0  # the registry sent the whole blob
            with open(partial, "ab" if offset else "wb") as out:
                if offset:
                    progress.log(f"{label}: resuming at byte {offset} of {blob.size}")
                progress.advance(offset, blob.size)
                reported = offset
                # Chunks as they arrive (no re-chunking): a connection cut mid-blob loses no received byte.
                for chunk in response.iter_bytes():
                    if offset + len(chunk) > blob.size:
                        out.close()
                        partial.unlink()
                        raise BlobError(
                            f"{label}: the registry sent more than the {blob.size} bytes the manifest says: "
                            "refused, nothing was kept"
                        )
                    out.write(chunk)
                    offset += len(chunk)
                    if offset - reported >= _PROGRESS_EVERY or offset == blob.size:
                        progress.advance(offset, blob.size)
                        reported = offset
        if offset < blob.size:
            raise httpx.ReadError(f"the connection ended after {offset} bytes")

    def usage(self) -> int:
        """Bytes held now (verified blobs and partial downloads)."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for directory in (self._blobs, self._partials):
            if directory.is_dir():
                for entry in os.scandir(directory):
                    if entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found.append((info.st_mtime, info.st_size, Path(entry.path)))
        return sorted(found)

    def evict(self, keep: Collection[str] = ()) -> list[Path]:
        """Delete least recently used files until the cache fits its cap; blobs in ``keep`` go last.

        Returns the deleted files, oldest first.
        """
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        keep_names = {digest.removeprefix("sha256:") for digest in keep}
        ordered = [e for e in entries if e[2].name not in keep_names] + [e for e in entries if e[2].name in keep_names]
        removed = []
        for _, size, path in ordered:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        return removed


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
