"""Merge an image's layers into one tree, by the OCI image-spec rules, in memory.

The tree holds metadata only (kind, mode, owners, mtime, xattrs, device
numbers, symlink targets); a regular file's content is appended to its layer's
pack file in a private blob directory (an opaque file, never with the image's
owners or modes), so no step needs root and nothing of the image is ever live on
the host. One pack per layer, not one file per image file: creating a directory
entry is what costs most on a host file system (see ``banger_oci.ext4``).

Rules (image-spec ``layer.md``), applied per layer in order:

* ``DIR/.wh..wh..opq`` hides everything lower layers put in ``DIR``, and
  ``DIR/.wh.NAME`` hides ``DIR/NAME``; both act on lower layers only, before the
  layer's other entries, wherever the marker stands in the tar. Other
  ``.wh..wh.`` names are reserved (old aufs layers' metadata) and skipped.
* A directory over a directory updates the attributes and keeps the content;
  anything else replaces what was there (a whole subtree included).
* A hard link shares the node of its target, which may come from a lower
  layer; replacing one twin later gives that path a new node and leaves the
  other intact. Link counts are counted from the final tree.
* Missing parent directories are created (0755 root:root). A parent that is a
  symlink is followed inside the tree (``..`` stops at the root, an absolute
  target starts there), as Docker's chrooted and umoci's securejoin'd
  extraction do; a parent that is a file, or a symlink to no directory, is
  refused. The tree only ever holds real paths, so nothing is written through
  a link when the image is built.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from banger_hookspecs import Progress
from banger_oci.layers import Kind, Layer, LayerError, LayerLimits, Member, read_layer

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
#: Reserved for whiteout metadata; besides OPAQUE only old aufs layers use it (.wh..wh.plnk/, .wh..wh.aufs).
META = ".wh..wh."


@dataclass(eq=False)
class Node:
    """A file system object in the merged tree; hard links are one Node under several names."""

    kind: Kind  #: never HARDLINK: a hard link is the target's Node
    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    content: Path | None = None  #: regular files: the file holding the bytes (from ``offset``, ``size`` of them)
    offset: int = 0
    target: str = ""  #: symlinks
    major: int = 0
    minor: int = 0
    children: dict[str, Node] = field(default_factory=dict)  #: directories


def _node(member: Member, content: Path | None = None, offset: int = 0) -> Node:
    return Node(
        kind=member.kind,
        mode=member.mode,
        uid=member.uid,
        gid=member.gid,
        mtime=member.mtime,
        xattrs=dict(member.xattrs),
        size=member.size,
        content=content,
        offset=offset,
        target=member.link if member.kind is Kind.SYMLINK else "",
        major=member.major,
        minor=member.minor,
    )


class Tree:
    """The merged root file system."""

    def __init__(self) -> None:
        self.root = Node(Kind.DIR, 0o755, 0, 0, 0)

    def lookup(self, path: str) -> Node | None:
        """The node at normalized ``path`` ("" is the root), not following symlinks."""
        node = self.root
        for part in path.split("/") if path else ():
            child = node.children.get(part) if node.kind is Kind.DIR else None
            if child is None:
                return None
            node = child
        return node

    def _follow(self, parts: list[str], hops: int = 40) -> tuple[Node, list[str]] | None:
        """The node at root-relative ``parts`` and its real path, following every symlink inside the tree."""
        pending = [p for p in parts if p not in ("", ".")]
        nodes: list[Node] = [self.root]
        names: list[str] = []
        while pending:
            part = pending.pop(0)
            if part == "..":  # never above the root, as in a chroot
                if names:
                    nodes.pop()
                    names.pop()
                continue
            child = nodes[-1].children.get(part) if nodes[-1].kind is Kind.DIR else None
            if child is None:
                return None
            if child.kind is Kind.SYMLINK:
                hops -= 1
                if hops < 0:
                    return None
                if child.target.startswith("/"):
                    nodes, names = [self.root], []
                pending = [p for p in child.target.split("/") if p not in ("", ".")] + pending
                continue
            nodes.append(child)
            names.append(part)
        return nodes[-1], names

    def resolve(self, path: str) -> Node | None:
        """The node at guest ``path``, following symlinks inside the tree (as the guest would)."""
        found = self._follow(path.split("/"))
        return found[0] if found is not None else None

    def _directory(self, parts: list[str], mtime: int, *, create: bool, entry: str) -> Node | None:
        """The directory at ``parts``: symlinks on the way are followed inside the tree, missing ones
        created (0755 root:root) when ``create``, else None."""
        node = self.root
        real: list[str] = []  # the path of ``node`` with symlinks resolved, for _follow and messages
        for part in parts:
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = Node(Kind.DIR, 0o755, 0, 0, mtime)
            elif child.kind is Kind.SYMLINK:
                found = self._follow([*real, part])
                if found is None or found[0].kind is not Kind.DIR:
                    where = "/".join([*real, part])
                    raise LayerError(f"entry {entry!r} lies under {where!r}, a symlink to no directory")
                node, real = found
                continue
            elif child.kind is not Kind.DIR:
                where = "/".join([*real, part])
                raise LayerError(f"entry {entry!r} lies under {where!r}, which is a {child.kind.value}")
            node = child
            real.append(part)
        return node

    def parent(self, path: str, mtime: int) -> Node:
        """The directory that holds ``path``, creating missing ones; symlinks on the way are followed."""
        directory = self._directory(path.split("/")[:-1], mtime, create=True, entry=path)
        assert directory is not None
        return directory

    def locate(self, path: str) -> Node | None:
        """The node at ``path`` (symlinks followed on the way, not at the end), or None."""
        if not path:
            return self.root
        head, _, name = path.rpartition("/")
        try:
            directory = self._directory(head.split("/") if head else [], 0, create=False, entry=path)
        except LayerError:
            return None
        return directory.children.get(name) if directory is not None else None

    def remove(self, path: str) -> None:
        """Drop ``path`` and everything under it, if present."""
        head, _, name = path.rpartition("/")
        try:
            directory = self._directory(head.split("/") if head else [], 0, create=False, entry=path)
        except LayerError:
            return
        if directory is not None:
            directory.children.pop(name, None)

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every ``(absolute path, node)``, parents before children, names sorted (root first, as "/")."""
        pending: list[tuple[str, Node]] = [("/", self.root)]
        while pending:
            path, node = pending.pop()
            yield path, node
            prefix = path.rstrip("/")
            pending.extend((f"{prefix}/{name}", child) for name, child in sorted(node.children.items(), reverse=True))

    def link_counts(self) -> dict[int, int]:
        """``id(node) -> number of names`` for non-directories (directories' counts are ext4's to keep)."""
        counts: dict[int, int] = {}
        for _, node in self.walk():
            if node.kind is not Kind.DIR:
                counts[id(node)] = counts.get(id(node), 0) + 1
        return counts


@dataclass
class _LayerChanges:
    pack: Path  #: the layer's regular files' bytes, one after the other
    opaque: list[str] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)
    #: each entry with the offset of its bytes in ``pack`` (regular files only)
    members: list[tuple[Member, int | None]] = field(default_factory=list)


def _read(layer: Layer, pack: Path, limits: LayerLimits) -> _LayerChanges:
    changes = _LayerChanges(pack)
    with pack.open("xb") as sink:
        for member, content in read_layer(layer, limits):
            head, _, name = member.path.rpartition("/")
            if name == OPAQUE:
                changes.opaque.append(head)
            elif any(part.startswith(META) for part in member.path.split("/")):
                continue  # aufs bookkeeping, not part of the image (as Docker and containerd skip it)
            elif name.startswith(WHITEOUT):
                hidden = name.removeprefix(WHITEOUT)
                if hidden in ("", ".", ".."):
                    raise LayerError(f"layer {layer.diff_id[:19]}: whiteout {member.path!r} names no sibling")
                changes.whiteouts.append(f"{head}/{hidden}" if head else hidden)
            elif content is not None:
                offset = sink.tell()
                shutil.copyfileobj(content, sink, 1 << 20)
                changes.members.append((member, offset))
            else:
                changes.members.append((member, None))
    return changes


def _apply(tree: Tree, member: Member, pack: Path, offset: int | None) -> None:
    if not member.path:
        if member.kind is not Kind.DIR:
            raise LayerError(f"a {member.kind.value} entry replaces the root directory")
        tree.root.mode, tree.root.uid, tree.root.gid = member.mode, member.uid, member.gid
        tree.root.mtime, tree.root.xattrs = member.mtime, dict(member.xattrs)
        return
    parent = tree.parent(member.path, member.mtime)
    name = member.path.rpartition("/")[2]
    existing = parent.children.get(name)
    if member.kind is Kind.HARDLINK:
        target = tree.locate(member.link)
        if target is None or target.kind is Kind.DIR:
            what = "missing" if target is None else "a directory"
            raise LayerError(f"hard link {member.path!r} points at {member.link!r}, which is {what}")
        parent.children[name] = target
    elif member.kind is Kind.DIR and existing is not None and existing.kind is Kind.DIR:
        existing.mode, existing.uid, existing.gid = member.mode, member.uid, member.gid
        existing.mtime, existing.xattrs = member.mtime, dict(member.xattrs)
    else:
        parent.children[name] = _node(member, pack if offset is not None else None, offset or 0)


def flatten(layers: Sequence[Layer], blobs: Path, progress: Progress, limits: LayerLimits | None = None) -> Tree:
    """Merge ``layers`` (lowest first) into a :class:`Tree`; file contents go to pack files in the empty dir ``blobs``.

    Raises:
        LayerError: a layer is hostile or broken (one line naming the layer and the entry).
    """
    tree = Tree()
    for number, layer in enumerate(layers, 1):
        progress.step(f"flattening layer {number}/{len(layers)} ({layer.path.stat().st_size} bytes)")
        changes = _read(layer, blobs / f"layer{number}", limits or LayerLimits())
        for directory in changes.opaque:
            node = tree.locate(directory)
            if node is not None and node.kind is Kind.DIR:
                node.children.clear()
        for path in changes.whiteouts:
            tree.remove(path)
        for member, offset in changes.members:
            try:
                _apply(tree, member, changes.pack, offset)
            except LayerError as error:
                raise LayerError(f"layer {layer.diff_id[:19]}: {error}") from None
        progress.advance(number, len(layers), "layers")
    return tree
