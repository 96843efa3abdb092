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

An image without ``/sbin/init`` cannot become a banger VM: that is refused
with one line saying how to fix the image. One without sshd is refused too,
with the two documented ways (docs/oci-import.md, "Images without sshd"),
unless the pull asked for the first of them (``--with-sshd``): then a
first-boot unit is baked in that installs openssh-server with the image's own
package manager (apt-get, apk or dnf, detected from the tree) before
``banger-ready`` starts, and starts sshd. The guest needs network for it; it is
idempotent (nothing to do once sshd is there, so only each VM's first boot
pays) and logs to the console.
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
#: Where the doc of the ways to get sshd into an image lives (named in the refusal).
SSHD_DOC = "docs/oci-import.md#images-without-sshd"
#: Package managers --with-sshd knows: (name, where the image has it, the install command line).
PACKAGE_MANAGERS = (
    (
        "apt-get",
        "usr/bin/apt-get",
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server",
    ),
    ("apk", "sbin/apk", "apk add --no-cache openssh-server"),
    ("dnf", "usr/bin/dnf", "dnf install -y openssh-server"),
)
INSTALL_SSHD_SCRIPT = "/usr/lib/banger/banger-install-sshd"
INSTALL_SSHD_UNIT = f"{UNIT_DIR}banger-install-sshd.service"
#: Runs before banger-ready (which then waits for the sshd it starts); oneshot, bounded.
INSTALL_SSHD_UNIT_TEXT = f"""\
[Unit]
Description=Install openssh-server at first boot (banger image pull --with-sshd)
After=network.target
Before=banger-ready.service

[Service]
Type=oneshot
ExecStart={INSTALL_SSHD_SCRIPT}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
"""


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


def _require_init(tree: Tree) -> None:
    init = tree.resolve("sbin/init")
    if init is None or init.kind is Kind.DIR:
        raise NotBootableError(
            "the image has no /sbin/init: banger boots the image's own init; "
            "use an image with systemd (Debian/Ubuntu: apt-get install -y systemd-sysv)"
        )


def has_sshd(tree: Tree) -> bool:
    """True when the image has an sshd binary where openssh-server puts it."""
    return any((node := tree.resolve(path)) is not None and node.kind is Kind.FILE for path in SSHD)


def package_manager(tree: Tree) -> tuple[str, str] | None:
    """``(name, install command)`` of the first package manager of :data:`PACKAGE_MANAGERS` the image has."""
    for name, path, install in PACKAGE_MANAGERS:
        node = tree.resolve(path)
        if node is not None and node.kind is Kind.FILE:
            return name, install
    return None


def install_sshd_script(manager: str, install: str) -> bytes:
    """The first-boot script for ``manager``: POSIX sh (Alpine has no bash), idempotent, bounded retries."""
    sshd_paths = " ".join(f"/{path}" for path in SSHD)
    return f"""#!/bin/sh
# banger image pull --with-sshd: install openssh-server with the image's own
# package manager ({manager}) at first boot, then start sshd. Needs the guest's network.
# Idempotent: once sshd is installed (this VM's later boots) there is nothing to do.
set -u
log() {{ echo "banger-install-sshd: $*"; }}
installed() {{
    for sshd in {sshd_paths}; do [ -x "$sshd" ] && return 0; done
    return 1
}}
installed && exit 0
log "the image has no openssh-server: installing it with {manager}"
for attempt in 1 2 3; do
    if {install}; then break; fi
    log "attempt $attempt failed"
    sleep 5
done
if ! installed; then
    log "could not install openssh-server (does the VM reach the package mirrors?)"
    exit 1
fi
mkdir -p /run/sshd
systemctl daemon-reload
for unit in ssh.service sshd.service; do
    if systemctl cat "$unit" >/dev/null 2>&1; then
        systemctl enable "$unit"
        systemctl start --no-block "$unit"  # banger-ready, ordered after this unit, waits for it
        log "openssh-server installed, $unit started"
        exit 0
    fi
done
log "openssh-server installed but no ssh.service or sshd.service unit came with it"
exit 1
""".encode()


def _sshd_pieces(tree: Tree, with_sshd: bool) -> list[tuple[str, bytes, int]]:
    """The first-boot pieces for ``--with-sshd`` (none when the image has sshd); raises when there is no way."""
    if has_sshd(tree):
        return []
    if not with_sshd:
        raise NotBootableError(
            "the image has no openssh-server (/usr/sbin/sshd) and banger reaches its VMs over ssh: pull it with "
            "--with-sshd to install it at first boot with the image's package manager (apt-get, apk or dnf; the VM "
            "needs network), or build the image with it (apt-get install -y openssh-server), see " + SSHD_DOC
        )
    found = package_manager(tree)
    if found is None:
        known = ", ".join(name for name, _, _ in PACKAGE_MANAGERS)
        raise NotBootableError(
            f"--with-sshd: the image has no package manager banger knows ({known}) to install openssh-server "
            f"with: build the image with openssh-server instead, see {SSHD_DOC}"
        )
    manager, install = found
    return [
        (INSTALL_SSHD_SCRIPT, install_sshd_script(manager, install), 0o755),
        (INSTALL_SSHD_UNIT, INSTALL_SSHD_UNIT_TEXT.encode(), 0o644),
    ]


def _put(tree: Tree, path: str, node: Node) -> None:
    relative = path.lstrip("/")
    try:
        parent = tree.parent(relative, node.mtime)
    except LayerError as error:
        raise NotBootableError(f"cannot add banger's {path} to the image: {error}") from None
    parent.children[relative.rpartition("/")[2]] = node


def make_bootable(tree: Tree, work: Path, *, with_sshd: bool = False) -> None:
    """Add banger's boot pieces to ``tree``; their contents go to the new directory ``work``.

    ``with_sshd``: an image without sshd gets the first-boot unit that installs it
    (see the module doc) instead of being refused.

    Raises:
        NotBootableError: no /sbin/init, or no sshd and no way to add it (one line with the fix).
    """
    _require_init(tree)
    files = [*boot_files(golden_dir()), *_sshd_pieces(tree, with_sshd)]
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
