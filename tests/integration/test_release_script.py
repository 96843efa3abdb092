"""``scripts/release``: what a release holds, that a rebuild is byte for byte the same, and refusals.

The cuts use the dependency cache of tests/support/releases.py (filled online on
a machine's first cut, then offline). tests/integration/test_update_live.py
installs such releases with ``banger update``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from banger_core.install.venv import wheel_build_info
from banger_updater.release import Manifest, ReleaseIndex
from tests.support.releases import FAKE_PLUGIN, REPO, Releases, extract_wheels, run_release

#: 2026-12-01T00:00:00Z
EPOCH = "1796083200"


def listing(root: Path) -> list[str]:
    return sorted(f"{p.relative_to(root)} {p.stat().st_size}" for p in root.rglob("*"))


def test_a_release_holds_every_distribution_and_rebuilds_identically(tmp_path: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    first = Releases(tmp_path / "first", None)
    release = first.cut("v0.2.0", FAKE_PLUGIN, env=env)
    again = Releases(tmp_path / "again", None).cut("v0.2.0", FAKE_PLUGIN, env=env)

    manifest_bytes = (release / "manifest.json").read_bytes()
    assert (again / "manifest.json").read_bytes() == manifest_bytes
    tar_path = release / "banger-v0.2.0-wheelhouse.tar"
    assert (again / tar_path.name).read_bytes() == tar_path.read_bytes()
    assert sorted(p.name for p in release.iterdir()) == ["banger-v0.2.0-wheelhouse.tar", "manifest.json"]
    # World-readable as published: a static server serves the files as they are.
    modes = {p.name: p.stat().st_mode & 0o777 for p in [release, *release.iterdir(), first.root / "index.json"]}
    assert modes == {"v0.2.0": 0o755, tar_path.name: 0o644, "manifest.json": 0o644, "index.json": 0o644}

    manifest = Manifest.from_json(manifest_bytes, "manifest.json")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert (str(manifest.version), manifest.commit, manifest.built_at) == (
        "v0.2.0",
        head.stdout.strip(),
        "2026-12-01T00:00:00Z",
    )
    [artifact] = manifest.artifacts
    assert (artifact.name, artifact.kind, artifact.size) == (tar_path.name, "wheelhouse", tar_path.stat().st_size)
    assert artifact.sha256 == hashlib.sha256(tar_path.read_bytes()).hexdigest()

    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        for member in members:
            assert member.isfile() and "/" not in member.name and member.name.endswith(".whl"), member.name
            assert (member.mode, member.uid, member.gid, member.uname, member.gname) == (0o644, 0, 0, "", "")
            assert member.mtime == int(EPOCH)
    extract_wheels(tar_path, tmp_path / "wheels")
    # Every distribution of the checkout and the extra one, each once; dependencies too (offline install).
    projects = [REPO, REPO / "hookspecs", *REPO.glob("plugins/*"), FAKE_PLUGIN]
    ours = {tomllib.loads((p / "pyproject.toml").read_text())["project"]["name"].replace("-", "_") for p in projects}
    wheels = {name.split("-")[0] for name in names}
    assert ours <= wheels and len(wheels) == len(names)
    assert {"httpx", "sigstore", "sqlmodel", "click"} <= wheels
    assert wheel_build_info(tmp_path / "wheels") == ("v0.2.0", manifest.commit, "2026-12-01T00:00:00Z")

    # A second version is listed beside the first; index.json stays sorted.
    first.cut("v0.10.0", env=env)
    index = ReleaseIndex.from_json((first.root / "index.json").read_bytes(), "index.json")
    assert [str(v) for v in index.releases] == ["v0.2.0", "v0.10.0"]
    assert json.loads((first.root / "index.json").read_text()) == {"schema": 1, "releases": ["v0.2.0", "v0.10.0"]}


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (
            ["--version", "0.2"],
            {},
            "--version '0.2' is not a release version: use vMAJOR.MINOR.PATCH, e.g. v0.2.0",
        ),
        (
            ["--version", "v0.1.0"],
            {},
            "{out}/v0.1.0 already exists: a published release never changes, cut a new version",
        ),
        (
            ["--version", "v0.3.0", "--extra-dist", "{out}/missing"],
            {},
            "--extra-dist {out}/missing: not a directory: pass a Python project directory",
        ),
        (
            ["--version", "v0.3.0", "--extra-dist", str(REPO / "plugins" / "qemu")],
            {},
            f"distribution banger-qemu is given twice ({REPO}/plugins/qemu and {REPO}/plugins/qemu): keep one",
        ),
        (
            ["--version", "v0.3.0", "--find-links", "{out}/missing"],
            {},
            "--find-links {out}/missing: not a directory",
        ),
        (
            ["--version", "v0.3.0"],
            {"SOURCE_DATE_EPOCH": "yesterday"},
            "SOURCE_DATE_EPOCH='yesterday' is not a number of seconds since 1970: unset or fix it",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], error: str
) -> None:
    out = tmp_path / "out"
    (out / "v0.1.0").mkdir(parents=True)
    (out / "index.json").write_text('{"schema": 1, "releases": ["v0.1.0"]}\n')
    before = listing(out)
    argv = [a.format(out=out) for a in args] + ["--out", str(out), "--sign-with", "none", "--allow-dirty"]
    done = run_release(*argv, env={**os.environ, **env})
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"release: error: {error.format(out=out)}\n")
    assert listing(out) == before


def test_a_damaged_index_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text('{"schema": 1, "releases": ["latest"]}\n')
    done = run_release("--version", "v0.1.0", "--out", str(out), "--sign-with", "none", "--allow-dirty")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"release: error: {out}/index.json: ") and done.stderr.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["index.json"]


FAKE_SIGSTORE = """
import json, os, sys
with open(os.environ["FAKE_SIGSTORE_CALLS"], "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_SIGSTORE_FAILS"):
    sys.exit("error: no identity token: not in CI?")
with open(sys.argv[sys.argv.index("--bundle") + 1], "w") as bundle:
    bundle.write('{"fake": "bundle"}')
"""


@pytest.mark.parametrize("fails", [False, True])
def test_sign_with_sigstore_runs_sigstore_sign_on_the_manifest(tmp_path: Path, fails: bool) -> None:
    """``--sign-with sigstore`` at its boundary: the OIDC login it needs cannot happen here, so ``python -m
    sigstore`` is a recording stand-in (first on PYTHONPATH) and the test asserts the exact call."""
    fake = tmp_path / "fake" / "sigstore"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(FAKE_SIGSTORE)
    calls = tmp_path / "sigstore-calls"
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "FAKE_SIGSTORE_CALLS": str(calls)}
    if fails:
        env["FAKE_SIGSTORE_FAILS"] = "1"
    releases = Releases(out, None)
    args = ["--version", "v0.4.0", "--out", str(out), "--sign-with", "sigstore", "--allow-dirty"]
    args += ["--no-build-isolation", "--find-links", str(releases.deps), "--no-index"]
    if not releases.deps.is_dir():  # the dependency cache is filled by a first cut
        releases.cut("v0.1.0")
        (out / "index.json").unlink()
        shutil.rmtree(out / "v0.1.0")
    done = run_release(*args, env=env)
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]
    manifest = Path(call[-1])
    assert call == ["sign", "--bundle", f"{manifest}.sigstore.json", str(manifest)]
    # The staged copy: signed before the version directory is renamed into --out.
    assert (manifest.name, manifest.parent.name, manifest.parent.parent.parent) == ("manifest.json", "v0.4.0", out)
    if fails:
        assert done.returncode == 1
        # sigstore's own reason (its output is the user's to see), then the script's one line.
        assert done.stderr.splitlines() == [
            "error: no identity token: not in CI?",
            "release: error: sigstore sign failed (exit status 1): it needs an OIDC identity (in CI: "
            "`permissions: id-token: write`); or use --sign-with none and sign manifest.json yourself",
        ]
        assert list(out.iterdir()) == []  # nothing published, no scratch left
        return
    assert done.returncode == 0, done.stderr
    release = out / "v0.4.0"
    assert sorted(p.name for p in release.iterdir()) == [
        "banger-v0.4.0-wheelhouse.tar",
        "manifest.json",
        "manifest.json.sigstore.json",
    ]
    assert (release / "manifest.json.sigstore.json").read_text() == '{"fake": "bundle"}'
    assert "unsigned" not in done.stdout
