"""Fetch a bundle into the download cache: streamed, resumable, verified before anyone reads it.

``<downloads>/<sha256>.tar.zst.partial`` grows while bytes arrive. A later
attempt (in the same pull after a dropped connection, or in the next pull)
resumes it with an HTTP ``Range`` request when the server honours one, and
starts over otherwise. Once the file has the catalog's size it is hashed; a
match renames it to ``<sha256>.tar.zst``, a mismatch deletes it. Downloads are
serialized with a lock on the downloads directory, so two pulls never write
the same ``.partial`` (callers hold :func:`download_lock` from download to
cleanup, so one pull never deletes the bundle another is about to read).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from banger_catalog.catalog import CatalogEntry, system_trust
from banger_catalog.errors import BundleError
from banger_hookspecs import Progress, SourceUnavailable

#: Attempts within one pull; only an attempt that received bytes earns a retry.
ATTEMPTS = 3
_CHUNK = 1 << 20
_PROGRESS_EVERY = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
USER_AGENT = "banger-catalog/0.1"
#: A Sigstore bundle is a few KiB (a certificate, a signature, a log entry); more is not one.
SIGNATURE_LIMIT = 256 << 10


@contextmanager
def download_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the downloads directory (created if needed), blocking until free."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fetch_bundle(entry: CatalogEntry, downloads: Path, progress: Progress, label: str, *, timeout: float) -> Path:
    """Return a local bundle file for ``entry`` whose size and sha256 match the catalog.

    Args:
        entry: a published catalog entry.
        downloads: the download cache directory; the caller holds :func:`download_lock` on it.
        progress: receives bytes received out of the bundle size.
        label: names the bundle in messages.
        timeout: seconds for connecting and for each read.

    Returns:
        ``<downloads>/<sha256>.tar.zst``, or the bundle itself for a ``file:`` URL.

    Raises:
        SourceUnavailable: the URL cannot be reached or does not serve the bundle.
        BundleError: what was served is not the bundle the catalog describes.
    """
    assert entry.sha256 is not None and entry.size is not None, "caller checks entry.published"
    if urlsplit(entry.url).scheme == "file":
        path = Path(urlsplit(entry.url).path)
        if not path.is_file():
            raise SourceUnavailable(f"{label}: bundle file {path} does not exist")
        _verify(path, entry, label, delete=False)
        return path
    final = downloads / f"{entry.sha256}.tar.zst"
    partial = downloads / f"{entry.sha256}.tar.zst.partial"
    if final.exists():
        # Left by a pull that was stopped after verification, before extraction finished.
        try:
            _verify(final, entry, label, delete=True)
            return final
        except BundleError:
            pass  # deleted; download it again
    progress.step(f"downloading {label} ({_human(entry.size)})")
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers, verify=system_trust()) as client:
        for _ in range(ATTEMPTS):
            if _attempt(client, entry, partial, progress, label):
                break
        else:
            raise SourceUnavailable(
                f"{label}: the download from {_host(entry.url)} kept breaking off; pull again to resume it"
            )
    _verify(partial, entry, label, delete=True)
    os.rename(partial, final)
    return final


def fetch_signature(entry: CatalogEntry, label: str, *, timeout: float) -> bytes:
    """The Sigstore bundle published beside ``entry``'s bundle (``URL.sigstore.json``), as bytes.

    Fetched before the bundle, so an unsigned bundle costs one small request and nothing is written.

    Raises:
        SourceUnavailable: no signature is published (the bundle is unsigned) or it cannot be fetched.
        BundleError: what is served there is far larger than any signature.
    """
    url = entry.signature_url
    unsigned = (
        f"{label} is not signed: no signature at {url}; ask the catalog's publisher to sign it "
        "(scripts/publish_catalog.py --sign-with sigstore), or accept this catalog's unsigned bundles "
        "with catalog_allow_unsigned"
    )
    if urlsplit(url).scheme == "file":
        path = Path(urlsplit(url).path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(SIGNATURE_LIMIT + 1)
        except FileNotFoundError:
            raise SourceUnavailable(unsigned) from None
        except OSError as exc:
            raise SourceUnavailable(f"{label}: signature {path} cannot be read ({exc.strerror})") from None
    else:
        data = _download_small(url, label, unsigned, timeout)
    if len(data) > SIGNATURE_LIMIT:
        raise BundleError(f"{label}: {url} is larger than {SIGNATURE_LIMIT} bytes, not a signature; tell the publisher")
    return data


def _download_small(url: str, label: str, missing: str, timeout: float) -> bytes:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, headers=headers, verify=system_trust()) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code in (404, 410):
                raise SourceUnavailable(missing)
            if response.status_code != 200:
                raise SourceUnavailable(f"{label}: {url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > SIGNATURE_LIMIT:
                    break  # the caller refuses it; reading on would only waste bandwidth
            return bytes(body)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"{label}: cannot download {url} ({_one_line(exc)})") from None


def _attempt(client: httpx.Client, entry: CatalogEntry, partial: Path, progress: Progress, label: str) -> bool:
    """One GET; True when ``partial`` holds all ``entry.size`` bytes, False to retry after a broken transfer."""
    assert entry.size is not None
    have = partial.stat().st_size if partial.exists() else 0
    if have > entry.size:
        partial.unlink()
        have = 0
    if have == entry.size:
        return True
    headers = {"Range": f"bytes={have}-"} if have else {}
    received = 0
    done = have
    try:
        with client.stream("GET", entry.url, headers=headers) as response:
            if response.status_code == 416:  # our partial does not fit what the server has: start over
                partial.unlink(missing_ok=True)
                return False
            if response.status_code not in (200, 206):
                raise SourceUnavailable(f"{label}: {entry.url} answered HTTP {response.status_code}")
            if response.status_code == 206 and not _range_fits(response, have, entry.size):
                partial.unlink(missing_ok=True)  # a range we did not ask for: start over
                return False
            offset = have if response.status_code == 206 else 0
            with open(partial, "r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                done = reported = offset
                for chunk in response.iter_bytes():  # as received: a drop loses nothing already here
                    if done + len(chunk) > entry.size:
                        raise _discard(
                            partial,
                            f"{label}: {entry.url} sends more than the {entry.size} bytes the catalog lists; "
                            "the download was deleted, check catalog_url or tell the catalog's publisher",
                        )
                    out.write(chunk)
                    received += len(chunk)
                    done += len(chunk)
                    if done - reported >= _PROGRESS_EVERY or done == entry.size:
                        progress.advance(done, entry.size)
                        reported = done
    except httpx.HTTPError as exc:
        if received == 0:
            raise SourceUnavailable(f"{label}: cannot download {entry.url} ({_one_line(exc)})") from None
        progress.log(f"download broke off after {received} bytes ({_one_line(exc)}); resuming")
        return False
    if done < entry.size:
        raise _discard(
            partial,
            f"{label}: {entry.url} ended after {done} of the {entry.size} bytes the catalog lists (truncated bundle); "
            "the download was deleted, tell the catalog's publisher",
        )
    return True


def _range_fits(response: httpx.Response, have: int, size: int) -> bool:
    """True if a 206 answer continues exactly where ``have`` bytes end."""
    match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
    if not match:
        return False
    start, total = int(match.group(1)), match.group(3)
    return start == have and total in ("*", str(size))


def _verify(path: Path, entry: CatalogEntry, label: str, *, delete: bool) -> None:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        what = f"{size} bytes, sha256 {digest.hexdigest()}"
        message = (
            f"{label}: the bundle does not match the catalog (got {what}; expected {entry.size} bytes, "
            f"sha256 {entry.sha256}); "
        )
        if delete:
            path.unlink(missing_ok=True)
            raise BundleError(message + "the download was deleted, check catalog_url or tell the catalog's publisher")
        raise BundleError(message + f"rebuild {path} or fix the catalog")


def _discard(partial: Path, message: str) -> BundleError:
    partial.unlink(missing_ok=True)
    return BundleError(message)


def remove_download(path: Path, downloads: Path) -> None:
    """Delete a verified bundle from the cache once extracted (never a ``file:`` bundle)."""
    if path.parent == downloads:
        path.unlink(missing_ok=True)


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
