"""Name rules shared by banger's core and its plugins: one regex and one sentence per kind of name.

* A **VM name** is a single DNS label: it is the guest's hostname
  (``banger.hostname=`` on the kernel command line, ``/etc/hostname``), the
  ``<name>.vm`` DNS name, and a path component on the host.
* An **image name** (also a kernel ref, and the name in a bundle's manifest)
  is a path component on the host: a letter or digit at both ends, no ``..``.

The patterns are matched whole (``fullmatch``): ``re.match`` with ``$`` would
also accept a name followed by a newline.

Example:
    >>> is_vm_name("happy-otter"), is_vm_name("web\\n"), is_vm_name("-web")
    (True, False, False)
    >>> is_image_name("debian-bookworm"), is_image_name("a..b"), is_image_name("debian.")
    (True, False, False)
"""

from __future__ import annotations

import re
from typing import TypeGuard

__all__ = [
    "DNS_LABEL",
    "IMAGE_NAME_RE",
    "IMAGE_NAME_RULE",
    "VM_NAME_RE",
    "VM_NAME_RULE",
    "is_image_name",
    "is_vm_name",
]

#: One DNS label (RFC 1123, lowercase): for composing domain patterns.
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
VM_NAME_RE = re.compile(DNS_LABEL)
VM_NAME_RULE = "use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-' (it becomes a DNS name)"

IMAGE_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
IMAGE_NAME_RULE = "use 1-64 characters of a-z, 0-9, '.', '_' and '-', starting and ending with a letter or digit"


def is_vm_name(name: object) -> TypeGuard[str]:
    """True if ``name`` is a valid VM name (a DNS label, also the guest's hostname)."""
    return isinstance(name, str) and VM_NAME_RE.fullmatch(name) is not None


def is_image_name(name: object) -> TypeGuard[str]:
    """True if ``name`` is a valid image name or kernel ref."""
    return isinstance(name, str) and IMAGE_NAME_RE.fullmatch(name) is not None and ".." not in name
