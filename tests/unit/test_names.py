"""Name rules: written once in banger_hookspecs.names, and every user applies that one rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dnslib import DNSRecord

from banger_core.common.names import InvalidName, validate_image_name, validate_vm_name
from banger_core.daemon.dns import VmZone
from banger_core.daemon.guest import GuestSetupError, validate_hostname
from banger_hookspecs.names import IMAGE_NAME_RULE, VM_NAME_RULE, is_image_name, is_vm_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

VM_NAMES = {
    "web": True,
    "happy-otter": True,
    "a": True,
    "0day": True,
    "a" * 63: True,
    "a" * 64: False,
    "-web": False,
    "web-": False,
    "web_1": False,
    "web.1": False,
    "Web": False,
    "": False,
    "web\n": False,  # re.match with "$" accepted this
    "\nweb": False,
    "wéb": False,
}

IMAGE_NAMES = {
    "debian-bookworm": True,
    "generic-6.1": True,
    "a_b.c-d": True,
    "a" * 64: True,
    "a" * 65: False,
    "a..b": False,
    ".hidden": False,
    "debian.": False,
    "debian-": False,
    "Debian": False,
    "a/b": False,
    "": False,
    "debian\n": False,  # re.match with "$" accepted this
}


def _accepts(check: object, name: str, error: type[Exception]) -> bool:
    assert callable(check)
    try:
        check(name)
    except error:
        return False
    return True


def _dns_looks_up(name: str) -> bool:
    asked: list[str] = []
    VmZone(lambda label: asked.append(label) or None).answer(DNSRecord.question(f"{name}.vm").pack())
    return asked == [name]


@pytest.mark.parametrize(("name", "valid"), VM_NAMES.items())
def test_every_user_of_the_vm_name_rule_agrees(name: str, valid: bool) -> None:
    assert is_vm_name(name) is valid
    assert _accepts(validate_vm_name, name, InvalidName) is valid
    assert _accepts(validate_hostname, name, GuestSetupError) is valid
    if 0 < len(name) <= 63 and name.isascii() and name.islower() and "\n" not in name and "." not in name:
        # The DNS zone asks the VM table only for names that can be VMs (others are NXDOMAIN);
        # a packet cannot carry the other names (longer labels, dots, upper case folds).
        assert _dns_looks_up(name) is valid


@pytest.mark.parametrize(("name", "valid"), IMAGE_NAMES.items())
def test_every_user_of_the_image_name_rule_agrees(name: str, valid: bool) -> None:
    assert is_image_name(name) is valid
    assert _accepts(validate_image_name, name, InvalidName) is valid
    assert _accepts(lambda n: validate_image_name(n, "kernel"), name, InvalidName) is valid


def test_errors_state_the_one_rule() -> None:
    with pytest.raises(InvalidName, match=re.escape(f"invalid VM name 'web\\n': {VM_NAME_RULE}")):
        validate_vm_name("web\n")
    with pytest.raises(GuestSetupError, match=re.escape(f"invalid VM name '-web': {VM_NAME_RULE}")):
        validate_hostname("-web")
    with pytest.raises(InvalidName, match=re.escape(f"invalid kernel name 'a..b': {IMAGE_NAME_RULE}")):
        validate_image_name("a..b", "kernel")


#: The rules' own patterns, as they were written out in several modules before.
RULE_FRAGMENTS = ("[a-z0-9-]{0,61}[a-z0-9]", "[a-z0-9._-]{0,62}[a-z0-9]", "[a-z0-9][a-z0-9._-]{0,63}")


def test_no_module_writes_a_name_rule_of_its_own() -> None:
    sources = [
        *REPO.glob("banger_core/**/*.py"),
        *REPO.glob("plugins/*/src/**/*.py"),
        *REPO.glob("hookspecs/src/**/*.py"),
    ]
    owner = REPO / "hookspecs/src/banger_hookspecs/names.py"
    copies = [
        f"{path.relative_to(REPO)}: {fragment}"
        for path in sources
        if path != owner
        for fragment in RULE_FRAGMENTS
        if fragment in path.read_text()
    ]
    assert copies == []
