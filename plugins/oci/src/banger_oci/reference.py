"""Image references (``alpine:3.20``, ``ghcr.io/o/r@sha256:...``) with Docker's defaults, and which ones oci claims.

Grammar (the distribution project's reference rules, sha256 digests only)::

    [REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]

* The first ``/``-separated part is a registry when it contains ``.`` or
  ``:`` or is ``localhost``; otherwise the registry is ``docker.io`` and a
  one-part repository gets ``library/`` (``alpine`` -> ``docker.io/library/alpine``).
* Without a tag or digest the tag is ``latest``. With a digest the tag is only
  a label: the digest decides what is pulled.
* Plain HTTP is used for loopback registries only (``localhost``, ``127.x.y.z``,
  ``[::1]``); every other registry is spoken to over HTTPS with the host's
  trust store, and there is no switch to turn that off.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from banger_hookspecs.names import is_image_name

DEFAULT_REGISTRY = "docker.io"
#: Docker Hub's API lives on another host than its name.
_REGISTRY_API_HOSTS = {"docker.io": "registry-1.docker.io"}
_REGISTRY_ALIASES = {"index.docker.io": "docker.io", "registry-1.docker.io": "docker.io"}

_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY_RE = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[::1\])(?::[0-9]{{1,5}})?")
_PATH_PART_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_MAX_REFERENCE = 255


class OciError(Exception):
    """Anything the oci source refuses; the message is one user sentence."""


class BadReference(OciError, ValueError):
    """The text is not an image reference."""


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference.

    Attributes:
        registry: ``host[:port]`` as the user names it (``docker.io`` for Docker Hub).
        repository: ``library/alpine``, ``team/base``.
        tag: the tag, ``latest`` when neither tag nor digest was given, None with a bare digest.
        digest: ``sha256:<hex>`` when pinned.
    """

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def manifest_ref(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def host(self) -> str:
        """The registry's host name without the port."""
        return self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry

    @property
    def base_url(self) -> str:
        """``https://HOST/v2/`` (``http://`` for a loopback registry only)."""
        scheme = "http" if is_loopback(self.host) else "https"
        return f"{scheme}://{_REGISTRY_API_HOSTS.get(self.registry, self.registry)}/v2/"

    def image_name(self) -> str:
        """The banger image name: last repository part and tag (or 12 digits of the digest).

        ``docker.io/library/alpine:3.20`` -> ``alpine-3.20``; ``r/app@sha256:ab12...`` -> ``app-ab12...``.
        """
        label = self.tag if self.tag is not None and self.digest is None else (self.digest or "")[7:19]
        name = f"{self.repository.rsplit('/', 1)[-1]}-{label.lower()}"
        name = re.sub(r"[^a-z0-9._-]", "-", name)[:64].rstrip("._-")
        return re.sub(r"\.{2,}", ".", name)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``[::1]``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_reference(text: str) -> Reference:
    """Parse ``text`` with Docker's defaults; raise :class:`BadReference` with the rule that was broken."""
    if not text or len(text) > _MAX_REFERENCE or text != text.strip():
        raise BadReference(f"{text!r} is not an image reference: use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise BadReference(f"{text!r}: the digest must be sha256: followed by 64 lowercase hex digits")
    registry = DEFAULT_REGISTRY
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _REGISTRY_RE.fullmatch(first):
            raise BadReference(f"{text!r}: {first!r} is not a registry host[:port]")
        registry, rest = _REGISTRY_ALIASES.get(first, first), remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise BadReference(f"{text!r}: tag {tag!r} must be 1-128 of A-Z, a-z, 0-9, '_', '.', '-'")
    parts = rest.split("/")
    if not all(_PATH_PART_RE.fullmatch(part) for part in parts):
        raise BadReference(
            f"{text!r}: repository {rest!r} must be lowercase parts of a-z, 0-9 and single separators ('.', '_', '-')"
        )
    if registry == DEFAULT_REGISTRY and len(parts) == 1:
        rest = f"library/{rest}"
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry=registry, repository=rest, tag=tag, digest=digest)


def claims(text: str) -> bool:
    """True when ``text`` is an image reference that is not also a plain banger image name.

    Plain names (``debian-bookworm``, ``alpine``) belong to the catalog and the
    local builders; a reference needs a ``:``, ``/`` or ``@`` to reach a
    registry (``alpine:latest``, ``docker.io/alpine``).
    """
    if is_image_name(text):
        return False
    try:
        parse_reference(text)
    except BadReference:
        return False
    return True
