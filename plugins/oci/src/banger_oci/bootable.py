"""Make a merged image tree bootable by banger (boot protocol v1, ``banger_hookspecs.boot``).

What a container image lacks to boot as a banger VM, added here exactly as
banger's golden image has it: the files come from the golden recipe
(``images/golden/debian-bookworm``, the debootstrap plugin's source too), so
both images share one definition of banger's boot pieces:

* ``/etc/fstab`` empty (the root is an overlay built by banger's initramfs) and
  ``/etc/machine-id`` empty (the VM's own id is staged on its overlay disk; an
  empty file, unlike a missing one, does not trigger systemd's first-boot setup);
* the ``banger-ready`` script and unit (enabled) that print the readiness marker
  once sshd answers, and banger's sshd drop-ins (root by key only; the per-VM
  ed25519 host key), with the image's own host keys removed: every VM gets its own;
* the mount points the initramfs uses (``/root`` for the work disk, ``/run``,
  ``/dev``, ``/proc``, ``/sys``) and ``/tmp``.

An image without ``/sbin/init`` or without sshd cannot become a banger VM: that
is refused with one line saying how to fix the image.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from banger_oci.flatten import Node, Tree
from banger_oci.layers import Kind, LayerError

GOLDEN = "debian-bookworm"
#: Files of the golden recipe that make up banger's boot pieces (by their ``src`` under files/).
BOOT_PIECES = ("banger-ready", "banger-ready.service", "sshd-banger.conf", "sshd-hostkey.conf")
#: Golden recipe entries given inline (``content``), by destination.
EMPTY_FILES = ("/etc/machine-id", "/etc/fstab")
#: Directories the initramfs mounts on, created when the image has none.
MOUNT_POINTS = {"root": 0o700, "run": 0o755, "dev": 0o755, "proc": 0o755, "sys": 0o755, "tmp": 0o1777}
#: Where openssh-server puts sshd (relative to the image root; symlinks such as /sbin -> usr/sbin are followed).
SSHD = ("usr/sbin/sshd", "sbin/sshd")
UNIT_DIR = "/etc/systemd/system/"


class NotBootableError(ValueError):
    """The image lacks something banger cannot add (an init, sshd); the message says how to fix it."""


def golden_dir() -> Path:
    """The golden recipe directory: packaged with the wheel, or the repository checkout's."""
    here = Path(__file__).resolve()
    candidates = [here.parent / "golden" / GOLDEN]  # a wheel: force-included by pyproject.toml
    if len(here.parents) > 4:  # an editable checkout: <repo>/plugins/oci/src/banger_oci/bootable.py
        candidates.append(here.parents[4] / "images" / "golden" / GOLDEN)
    for candidate in candidates:
        if (candidate / "recipe.toml").is_file():
            return candidate
    raise NotBootableError(f"banger's golden recipe {GOLDEN} is missing from this installation: reinstall banger-oci")


def boot_files(golden: Path) -> list[tuple[str, bytes, int]]:
    """``(dest, content, mode)`` of banger's boot pieces, read from the golden recipe."""
    recipe = tomllib.loads((golden / "recipe.toml").read_text())
    files: list[tuple[str, bytes, int]] = []
    for spec in recipe.get("files", []):
        mode = int(spec.get("mode", "0644"), 8)
        if spec.get("src") in BOOT_PIECES:
            files.append((spec["dest"], (golden / "files" / spec["src"]).read_bytes(), mode))
        elif spec["dest"] in EMPTY_FILES:
            files.append((spec["dest"], spec["content"].encode(), mode))
    found = {Path(dest).name for dest, _, _ in files}
    if len(files) != len(BOOT_PIECES) + len(EMPTY_FILES):
        raise NotBootableError(f"banger's golden recipe {golden} lacks some boot pieces (has {sorted(found)})")
    return files


def _require(tree: Tree) -> None:
    init = tree.resolve("sbin/init")
    if init is None or init.kind is Kind.DIR:
        raise NotBootableError(
            "the image has no /sbin/init: banger boots the image's own init; "
            "use an image with systemd (Debian/Ubuntu: apt-get install -y systemd-sysv)"
        )
    if not any((node := tree.resolve(path)) is not None and node.kind is Kind.FILE for path in SSHD):
        raise NotBootableError(
            "the image has no openssh-server (/usr/sbin/sshd): banger reaches its VMs over ssh; "
            "install it in the image (Debian/Ubuntu: apt-get install -y openssh-server) and pull it again"
        )


def _put(tree: Tree, path: str, node: Node) -> None:
    relative = path.lstrip("/")
    try:
        parent = tree.parent(relative, node.mtime)
    except LayerError as error:
        raise NotBootableError(f"cannot add banger's {path} to the image: {error}") from None
    parent.children[relative.rpartition("/")[2]] = node


def make_bootable(tree: Tree, work: Path) -> None:
    """Add banger's boot pieces to ``tree``; their contents go to the new directory ``work``.

    Raises:
        NotBootableError: no /sbin/init or no sshd in the image (one line with the fix).
    """
    _require(tree)
    files = boot_files(golden_dir())
    work.mkdir()
    stamp = tree.root.mtime
    ssh = tree.lookup("etc/ssh")
    if ssh is not None and ssh.kind is Kind.DIR:
        for name in [n for n in ssh.children if n.startswith("ssh_host_")]:
            del ssh.children[name]
    for number, (dest, content, mode) in enumerate(files):
        blob = work / str(number)
        blob.write_bytes(content)
        _put(tree, dest, Node(Kind.FILE, mode, 0, 0, stamp, size=len(content), content=blob))
        if dest.startswith(UNIT_DIR) and dest.endswith(".service"):
            wants = f"{UNIT_DIR}multi-user.target.wants/{Path(dest).name}"
            _put(tree, wants, Node(Kind.SYMLINK, 0o777, 0, 0, stamp, target=dest))
    for name, mode in MOUNT_POINTS.items():
        if name not in tree.root.children:
            tree.root.children[name] = Node(Kind.DIR, mode, 0, 0, stamp)
