"""VM and image names, validated before anything touches the filesystem.

The rules themselves live in :mod:`banger_hookspecs.names` (plugins need them too).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from banger_core.common.errors import BangerError, InvalidName
from banger_hookspecs.names import IMAGE_NAME_RULE, VM_NAME_RULE, is_image_name, is_vm_name

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
    if not is_vm_name(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else "given"
        raise InvalidName(f"invalid VM name {shown}: {VM_NAME_RULE}")
    return name


def validate_image_name(name: object, kind: str = "image") -> str:
    if not is_image_name(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else "given"
        raise InvalidName(f"invalid {kind} name {shown}: {IMAGE_NAME_RULE}")
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


#: What :func:`new_vm_id` makes (matched whole): checked wherever an id becomes a path.
VM_ID_RE = re.compile(r"[0-9a-f]{16}")


def new_vm_id() -> str:
    """16 hex characters; VM paths and tap names derive from it."""
    return secrets.token_hex(8)
