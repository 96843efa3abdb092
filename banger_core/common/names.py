"""VM names: DNS labels, validated before anything touches the filesystem."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from banger_core.common.errors import BangerError, InvalidName

VM_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
IMAGE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")

ADJECTIVES = [
    "agile",
    "amber",
    "bold",
    "brave",
    "breezy",
    "bright",
    "brisk",
    "calm",
    "clever",
    "cosmic",
    "crisp",
    "curious",
    "daring",
    "dapper",
    "eager",
    "fancy",
    "fearless",
    "fluffy",
    "frosty",
    "gentle",
    "giddy",
    "glad",
    "golden",
    "happy",
    "hardy",
    "hasty",
    "humble",
    "jolly",
    "keen",
    "kind",
    "lively",
    "lucky",
    "mellow",
    "merry",
    "mighty",
    "nimble",
    "noble",
    "plucky",
    "polite",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "rustic",
    "sassy",
    "shiny",
    "silent",
    "sleek",
    "snappy",
    "sneaky",
    "spry",
    "steady",
    "sturdy",
    "sunny",
    "swift",
    "tidy",
    "tiny",
    "tough",
    "trusty",
    "vivid",
    "wise",
    "witty",
    "zany",
    "zesty",
]
NOUNS = [
    "otter",
    "badger",
    "beaver",
    "bison",
    "cobra",
    "condor",
    "coyote",
    "crane",
    "dingo",
    "dolphin",
    "eagle",
    "falcon",
    "ferret",
    "finch",
    "fox",
    "gecko",
    "gibbon",
    "heron",
    "hornet",
    "ibis",
    "jackal",
    "jaguar",
    "koala",
    "lemur",
    "lynx",
    "magpie",
    "marmot",
    "marten",
    "mink",
    "moose",
    "narwhal",
    "newt",
    "ocelot",
    "osprey",
    "panda",
    "pelican",
    "puffin",
    "quail",
    "raven",
    "robin",
    "salmon",
    "seal",
    "shrike",
    "sloth",
    "stoat",
    "swan",
    "tapir",
    "tern",
    "tiger",
    "toucan",
    "turtle",
    "viper",
    "walrus",
    "weasel",
    "wombat",
    "yak",
    "zebra",
]


def validate_vm_name(name: object) -> str:
    """Return ``name`` if it is a valid VM name (a DNS label), else raise with the rule."""
    if not isinstance(name, str) or not VM_NAME_RE.match(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else "given"
        raise InvalidName(
            f"invalid VM name {shown}: use 1-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-' (it becomes a DNS name)"
        )
    return name


def validate_image_name(name: object, kind: str = "image") -> str:
    if not isinstance(name, str) or not IMAGE_NAME_RE.match(name) or ".." in name:
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else "given"
        raise InvalidName(
            f"invalid {kind} name {shown}: use 1-64 characters of a-z, 0-9, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def generate_vm_name(taken: Callable[[str], bool], attempts: int = 200) -> str:
    """A free ``adjective-noun`` name (``-2``, ``-3``... suffixes once the pairs run out)."""
    for attempt in range(attempts):
        name = f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}"
        if attempt >= attempts // 2:
            name = f"{name}-{secrets.randbelow(9000) + 1000}"
        if not taken(name):
            return name
    raise BangerError("could not find a free VM name: pass --name")


def new_vm_id() -> str:
    """16 hex characters; VM paths and tap names derive from it."""
    return secrets.token_hex(8)
