"""The commands the syncer runs in the guest.

All are fixed ``sh -c`` scripts; every value (the guest directory, the
manifest path, a commit id) is passed as a positional argument, never pasted
into the script, and the core's :class:`~banger_hookspecs.GuestShell` quotes
each argv element. The file sync needs only ``sh``, ``tar``, ``head``,
``xargs``, ``rm``, ``mv`` and ``rmdir``; the incremental query also uses GNU
``find`` when it is there; the history steps need ``git``.

Sync bookkeeping lives outside the workspace: the manifest of a guest
directory is ``.cache/banger/workspaces/<id>.manifest`` under the guest
user's home (where an ssh command starts), ``<id>`` a digest of the guest
path. So the workspace holds only the user's files (and ``.git``).
"""

from __future__ import annotations

import hashlib

from banger_git.entries import MANIFEST_NAME

MANIFEST_DIR = ".cache/banger/workspaces"

#: stdin: ``<N>\n`` + N bytes of NUL-separated paths to delete + a tar stream.
#: Deleting first lets a path change from file to directory (or back).
#: Emptied parent directories of deleted files are removed too. The archive's
#: last member is the manifest under the reserved name ``$3``; once tar has
#: extracted everything it moves to ``$2``, out of the workspace.
SYNC_SCRIPT = r"""set -e
case $2 in /*) manifest=$2;; *) manifest=$(pwd)/$2;; esac
mkdir -p -- "$1"
cd -- "$1"
IFS= read -r count
case $count in ''|*[!0-9]*) echo "banger: malformed sync stream" >&2; exit 90;; esac
if [ "$count" -gt 0 ]; then
  head -c "$count" | xargs -0 -r sh -c '
    for p do
      rm -f -- "$p" 2>/dev/null || :
      while case $p in */*) true;; *) false;; esac; do
        p=${p%/*}
        rmdir -- "$p" 2>/dev/null || break
      done
    done' banger-delete
fi
rm -f -- "$3"
tar -x -p -o -f - || { status=$?; rm -f -- "$3"; exit "$status"; }
mkdir -p -- "${manifest%/*}"
mv -f -- "$3" "$manifest"
"""

#: stdin: NUL-separated ``./path`` entries of the plan.
#: stdout: ``absent\n``, or ``present\n`` + ``<N>\n`` + N manifest bytes +
#: ``stat\n`` + NUL-separated find records (path, type, mode, size, mtime,
#: link target) of the planned paths the guest has, or ``nostat\n``.
QUERY_SCRIPT = r"""case $2 in /*) manifest=$2;; *) manifest=$(pwd)/$2;; esac
if ! cd -- "$1" 2>/dev/null; then cat >/dev/null; echo absent; exit 0; fi
echo present
if [ -f "$manifest" ] && [ ! -L "$manifest" ]; then wc -c < "$manifest" | tr -d ' '; cat -- "$manifest"; else echo 0; fi
if [ "$(find . -maxdepth 0 -printf ok 2>/dev/null)" = ok ]; then
  echo stat
  xargs -0 -r sh -c 'find "$@" -prune -printf "%p\0%y\0%m\0%s\0%T@\0%l\0" 2>/dev/null; exit 0' banger-stat
else
  cat >/dev/null
  echo nostat
fi
"""


def manifest_path(guest_path: str) -> str:
    """Where the manifest of ``guest_path`` lives in the guest, relative to the guest user's home."""
    digest = hashlib.sha256(guest_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{MANIFEST_DIR}/{digest}.manifest"


def sync_argv(guest_path: str) -> list[str]:
    """argv that receives a sync stream into ``guest_path``."""
    return ["sh", "-c", SYNC_SCRIPT, "banger-sync", guest_path, manifest_path(guest_path), MANIFEST_NAME]


def query_argv(guest_path: str) -> list[str]:
    """argv that describes what ``guest_path`` holds."""
    return ["sh", "-c", QUERY_SCRIPT, "banger-query", guest_path, manifest_path(guest_path)]


#: Makes the workspace a git checkout of what was shipped (see ``history.py``);
#: runs while the files are extracted, touching only ``.git``. Arguments:
#: directory, commit ("" for a repository without commits), branch ("" for a
#: detached HEAD), ``index`` or ``tree`` (where the index comes from).
#: stdin: ``<N>\n`` + N bytes of ``git update-index -z --index-info`` input,
#: then a pack. The pack is read only when the guest lacks an object: a
#: re-sync of the same commit stops reading early.
#: A repository whose HEAD moved away from what banger shipped (the user
#: committed in the guest) keeps its HEAD and index: stdout says ``kept``.
HISTORY_SCRIPT = r"""set -e
mkdir -p -- "$1"
cd -- "$1"
if ! command -v git >/dev/null 2>&1; then echo nogit; exit 0; fi
IFS= read -r count
case $count in ''|*[!0-9]*) echo "banger: malformed history stream" >&2; exit 90;; esac
info=$(mktemp)
trap 'rm -f -- "$info"' EXIT
head -c "$count" > "$info"
export GIT_DIR="$PWD/.git" GIT_WORK_TREE="$PWD"
fresh=
if [ ! -d .git ]; then git -c init.defaultBranch=main init -q; fresh=1; fi
have=1
if [ -n "$2" ] && ! git cat-file -e "$2^{tree}" 2>/dev/null; then have=; fi
if [ -n "$have" ] && tr '\0' '\n' < "$info" | grep -v '^160000 ' | cut -d' ' -f2 |
  git cat-file --batch-check | grep -q ' missing$'; then have=; fi
if [ -n "$have" ]; then exec 0</dev/null; else git index-pack --stdin >/dev/null; fi
shipped=$(git rev-parse -q --verify refs/banger/shipped || :)
head=$(git rev-parse -q --verify HEAD || :)
if [ -z "$fresh" ] && [ "$head" != "$shipped" ]; then echo kept; exit 0; fi
if [ -n "$2" ]; then
  grep -qxF -- "$2" "$GIT_DIR/shallow" 2>/dev/null || echo "$2" >> "$GIT_DIR/shallow"
  git update-ref refs/banger/shipped "$2"
  if [ -n "$3" ]; then
    git update-ref "refs/heads/$3" "$2"
    git symbolic-ref HEAD "refs/heads/$3"
  else
    git update-ref --no-deref HEAD "$2"
  fi
else
  git update-ref -d refs/banger/shipped 2>/dev/null || :
  if [ -n "$3" ]; then git symbolic-ref HEAD "refs/heads/$3"; fi
fi
rm -f -- "$GIT_DIR/index"
if [ "$4" = tree ]; then git read-tree "$2"; else git update-index -z --index-info < "$info"; fi
echo ok
"""

#: Packs up what the guest did since banger shipped (see ``roundtrip.py``),
#: without touching the guest's HEAD, index or files: the uncommitted changes
#: (untracked files included, ignored ones not) become a commit built through
#: a temporary index. Arguments: directory, the message of that commit.
#: stdout: ``banger-pull 1\n<shipped>\n<head>\n<tip>\n`` then, when the tip
#: differs from what was shipped, a git bundle of ``refs/banger/pull`` (the
#: tip) that needs only the shipped commit.
EXPORT_SCRIPT = r"""set -e
if ! cd -- "$1" 2>/dev/null; then echo "banger: $1 does not exist in the guest" >&2; exit 92; fi
if ! command -v git >/dev/null 2>&1; then echo "banger: the guest has no git" >&2; exit 93; fi
if [ ! -d .git ]; then echo "banger: $1 in the guest is not a git checkout" >&2; exit 94; fi
export GIT_DIR="$PWD/.git" GIT_WORK_TREE="$PWD"
base=$(git rev-parse -q --verify 'refs/banger/shipped^{commit}' || :)
head=$(git rev-parse -q --verify 'HEAD^{commit}' || :)
index=$(mktemp -d)/index
trap 'rm -rf -- "${index%/index}"' EXIT
if [ -f "$GIT_DIR/index" ]; then cp -- "$GIT_DIR/index" "$index"; fi
GIT_INDEX_FILE=$index git add -A -- .
tree=$(GIT_INDEX_FILE=$index git write-tree)
tip=$head
if [ -z "$head" ] || [ "$tree" != "$(git rev-parse "$head^{tree}")" ]; then
  git var GIT_AUTHOR_IDENT >/dev/null 2>&1 || export GIT_AUTHOR_NAME=banger GIT_AUTHOR_EMAIL=banger@localhost
  git var GIT_COMMITTER_IDENT >/dev/null 2>&1 || export GIT_COMMITTER_NAME=banger GIT_COMMITTER_EMAIL=banger@localhost
  if [ -n "$head" ]; then tip=$(git commit-tree "$tree" -p "$head" -m "$2")
  else tip=$(git commit-tree "$tree" -m "$2"); fi
fi
printf 'banger-pull 1\n%s\n%s\n%s\n' "$base" "$head" "$tip"
if [ -n "$tip" ] && [ "$tip" != "$base" ]; then
  git update-ref refs/banger/pull "$tip"
  if [ -n "$base" ]; then git bundle create -q - refs/banger/pull "^$base"
  else git bundle create -q - refs/banger/pull; fi
  git update-ref -d refs/banger/pull
fi
"""


def history_argv(guest_path: str, commit: str | None, branch: str | None, index_from: str) -> list[str]:
    """argv that makes ``guest_path`` a git checkout of ``commit`` (stdin: index info + pack)."""
    return ["sh", "-c", HISTORY_SCRIPT, "banger-history", guest_path, commit or "", branch or "", index_from]


def export_argv(guest_path: str, message: str) -> list[str]:
    """argv that prints the guest's work since shipping as a header plus a bundle."""
    return ["sh", "-c", EXPORT_SCRIPT, "banger-export", guest_path, message]
