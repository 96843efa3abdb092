"""``banger update`` on an install rendered by ``system install --root``, against signed test releases.

The signatures are real (sigstore-python verifying bundles of the session's own trust lab),
the venvs are really built by pip from the wheelhouse, offline; only banger's wheel is tiny.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from banger_core.testing import invoke_cli, isolated_env
from banger_core.testing.sigstore_lab import TrustLab
from banger_updater.release import Manifest, Version, artifact_path, manifest_path, signature_path
from plugins.updater.tests.conftest import config_for
from plugins.updater.tests.release_lab import banger_wheel, commit_of, publish, tar_of, tree
from plugins.updater.tests.servers import ReleaseServer

pytestmark = pytest.mark.unit


def update(root: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = invoke_cli(["update", "--root", str(root), *args], env)
    return result.exit_code, result.stdout, result.stderr


def current(root: Path) -> str:
    return str((root / "opt/banger/current").readlink())


def record(root: Path) -> dict[str, object]:
    with (root / "etc/banger/install.toml").open("rb") as fh:
        return tomllib.load(fh)


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "opt/banger/versions").iterdir())


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("banger: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_update_installs_the_newest_release_and_keeps_the_previous(
    installed: Path, updater_env: dict[str, str]
) -> None:
    code, out, err = update(installed, updater_env)
    assert code == 0, err
    assert out == (
        f"banger v0.1.0 -> v0.3.0 under {installed} (--root: no services restarted, no doctor run); "
        "v0.1.0 kept for --rollback\n"
    )
    assert current(installed) == "versions/v0.3.0"
    data = record(installed)
    assert (data["version"], data["commit"], data["built_at"]) == (
        "v0.3.0",
        commit_of("v0.3.0"),
        "2026-12-01T00:00:00Z",
    )
    assert data["paths"]["venv"] == "/opt/banger/versions/v0.3.0"  # type: ignore[index]
    assert data["owner"] == "daemon"  # the rest of the record is kept
    assert versions(installed) == ["v0.1.0", "v0.3.0"]  # no scratch directory left
    script = (installed / "opt/banger/versions/v0.3.0/bin/banger").read_text()
    assert script.startswith("#!/opt/banger/versions/v0.3.0/bin/python")  # where it will live, not the scratch dir
    assert "verifying the signature of release v0.3.0" in err and "building the virtualenv for v0.3.0" in err


def test_check_says_whether_an_update_exists_by_exit_status(installed: Path, updater_env: dict[str, str]) -> None:
    code, out, _ = update(installed, updater_env, "--check")
    assert (code, out) == (10, "banger v0.1.0; v0.3.0 is available: `sudo banger update` installs it\n")
    code, out, _ = update(installed, updater_env, "--check", "--json")
    assert code == 10
    assert json.loads(out) == {
        "current": "v0.1.0",
        "newest": "v0.3.0",
        "update_available": True,
        "newest_commit": commit_of("v0.3.0"),
        "newest_built_at": "2026-12-01T00:00:00Z",
    }
    assert versions(installed) == ["v0.1.0"]  # a check changes nothing
    assert update(installed, updater_env)[0] == 0
    code, out, _ = update(installed, updater_env, "--check")
    assert (code, out) == (0, "banger v0.3.0 is up to date (newest release v0.3.0)\n")


def test_to_an_older_release_only_when_named_and_then_rollback(installed: Path, updater_env: dict[str, str]) -> None:
    assert update(installed, updater_env, "--to", "v0.3.0")[0] == 0
    code, out, _ = update(installed, updater_env, "--to", "v0.3.0")
    assert (code, out) == (0, "banger is already at v0.3.0\n")
    # A downgrade, asked for by name: v0.3.0 is kept, v0.1.0 (two versions back) removed.
    code, out, err = update(installed, updater_env, "--to", "v0.2.0")
    assert code == 0, err
    assert out.endswith("v0.3.0 kept for --rollback; removed v0.1.0\n")
    assert current(installed) == "versions/v0.2.0" and versions(installed) == ["v0.2.0", "v0.3.0"]
    rendered_record = record(installed)

    code, out, err = update(installed, updater_env, "--rollback")
    assert code == 0, err
    assert out.startswith("banger v0.2.0 -> v0.3.0 under ")
    assert current(installed) == "versions/v0.3.0"
    assert {k: record(installed)[k] for k in ("version", "commit")} == {
        "version": "v0.3.0",
        "commit": commit_of("v0.3.0"),
    }
    # --rollback again goes back: the version left is the one kept.
    assert update(installed, updater_env, "--rollback")[0] == 0
    assert record(installed) == rendered_record


def test_a_newest_release_older_than_the_install_is_no_update(installed: Path, updater_env: dict[str, str]) -> None:
    assert update(installed, updater_env, "--to", "v0.3.0")[0] == 0
    index = Path(updater_env["HOME"]).parents[1] / "releases" / "index.json"
    index.write_text('{"schema": 1, "releases": ["v0.1.0", "v0.2.0"]}')  # a host serving an old index
    before = tree(installed)
    code, out, _ = update(installed, updater_env)
    assert (code, out) == (0, "banger v0.3.0 is newer than the newest release v0.2.0: nothing to update\n")
    assert tree(installed) == before


def test_rollback_without_a_kept_version_is_one_line(installed: Path, updater_env: dict[str, str]) -> None:
    code, _, err = update(installed, updater_env, "--rollback")
    assert code == 1
    versions_dir = installed / "opt/banger/versions"
    assert error_line(err) == (
        f"banger: error: no previous version is kept in {versions_dir}: there is nothing to roll back to"
    )


def test_dry_run_builds_everything_and_changes_nothing(installed: Path, updater_env: dict[str, str]) -> None:
    before = tree(installed)
    code, out, err = update(installed, updater_env, "--dry-run")
    assert code == 0, err
    assert out == "dry run: v0.3.0 verified, downloaded and built; nothing changed (still v0.1.0)\n"
    assert "building the virtualenv for v0.3.0" in err
    assert tree(installed) == before


def test_updates_over_http_with_progress_in_bytes(installed: Path, releases: Path, trust_lab: TrustLab) -> None:
    server = ReleaseServer(releases)
    env = isolated_env(installed.parent / "http-env", config=config_for(server.url, trust_lab))
    with server.running():
        code, _, err = update(installed, env, "--to", "v0.2.0")
    assert code == 0, err
    size = (releases / "v0.2.0" / "banger-v0.2.0-wheelhouse.tar").stat().st_size
    assert f"downloading banger-v0.2.0-wheelhouse.tar ({size} bytes)" in err
    assert f"({100}%)" in err  # the plain progress lines of a transfer (no terminal here)
    assert [path for path, _ in server.requests] == [
        "/v0.2.0/manifest.json",
        "/v0.2.0/manifest.json.sigstore.json",
        "/v0.2.0/banger-v0.2.0-wheelhouse.tar",
    ]


def test_a_cut_download_is_resumed_by_the_next_run(installed: Path, releases: Path, trust_lab: TrustLab) -> None:
    server = ReleaseServer(releases)
    env = isolated_env(installed.parent / "http-env", config=config_for(server.url, trust_lab))
    before = tree(installed)
    server.cut["/v0.2.0/banger-v0.2.0-wheelhouse.tar"] = 4000
    with server.running():
        code, _, err = update(installed, env, "--to", "v0.2.0")
        assert code == 1 and "received 4000 bytes" in error_line(err)
        assert error_line(err).endswith(": run it again to resume the download")
        parts = sorted((installed / "opt/banger/versions/.update").iterdir())
        assert [p.suffix for p in parts] == [".part"] and parts[0].stat().st_size == 4000
        assert [line for line in tree(installed) if "/.update" not in line] == before  # only the partial download
        code, _, err = update(installed, env, "--to", "v0.2.0")
    assert code == 0, err
    assert server.requests[-1] == ("/v0.2.0/banger-v0.2.0-wheelhouse.tar", "bytes=4000-")
    assert current(installed) == "versions/v0.2.0" and versions(installed) == ["v0.1.0", "v0.2.0"]


# -- refusals: one line, exit 1, nothing on disk changed ----------------------------------------------


def tamper_tar(releases: Path, lab: TrustLab) -> None:
    path = releases / "v0.3.0" / "banger-v0.3.0-wheelhouse.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 1
    path.write_bytes(bytes(data))


def tamper_manifest(releases: Path, lab: TrustLab) -> None:
    path = releases / "v0.3.0" / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b"2026-12-01T00:00:00Z", b"2026-12-02T00:00:00Z"))


def sign_as(identity: str = "", issuer: str = "") -> object:
    def resign(releases: Path, lab: TrustLab) -> None:
        data = (releases / "v0.3.0" / "manifest.json").read_bytes()
        kw = {"identity": identity} if identity else {"issuer": issuer}
        (releases / "v0.3.0" / "manifest.json.sigstore.json").write_bytes(lab.sign(data, **kw))

    return resign


def sign_with(lab_options: dict[str, bool], name: str) -> object:
    def resign(releases: Path, lab: TrustLab) -> None:
        other = TrustLab(releases.parent / name, name=name, **lab_options)
        data = (releases / "v0.3.0" / "manifest.json").read_bytes()
        (releases / "v0.3.0" / "manifest.json.sigstore.json").write_bytes(other.sign(data))
        if lab_options:  # a lab whose root lists a log key it does not sign with: trust its root
            config = Path(releases.parent / "env/home/.config/banger/config.toml")
            config.write_text(config.read_text().replace(str(lab.trusted_root), str(other.trusted_root)))

    return resign


def replay_old_manifest(releases: Path, lab: TrustLab) -> None:
    for name in ("manifest.json", "manifest.json.sigstore.json"):
        shutil.copy(releases / "v0.1.0" / name, releases / "v0.3.0" / name)


def other_python(releases: Path, lab: TrustLab) -> None:
    publish(releases, "v0.3.0", lab, python="cp39")


def mislabelled_wheel(releases: Path, lab: TrustLab) -> None:
    wheels = releases / ".wheels" / "mislabel"
    wheels.mkdir(parents=True)
    wheel = banger_wheel(wheels, "v0.2.0")  # a v0.2.0 banger inside a release signed as v0.3.0
    publish(releases, "v0.3.0", lab, tar=tar_of({wheel.name: wheel.read_bytes()}))


def hostile_tar(releases: Path, lab: TrustLab) -> None:
    publish(releases, "v0.3.0", lab, tar=tar_of({"../escape.whl": b"x"}))


EVIL = "https://github.com/evil/banger/.github/workflows/release.yml@refs/heads/main"
EVIL = "https://github.com/evil/banger/.github/workflows/release.yml@refs/heads/main"
OTHER_ISSUER = "https://accounts.example.test"
#: Each way a release can be bad, and what its one error line must say.
REFUSALS = {
    "tampered tarball": (tamper_tar, "/v0.3.0/banger-v0.3.0-wheelhouse.tar: sha256 "),
    "tampered manifest": (tamper_manifest, "release v0.3.0's manifest.json: signature refused: artifact digest"),
    "wrong identity": (sign_as(identity=EVIL), f"signed by identity '{EVIL}'"),
    "wrong issuer": (sign_as(issuer=OTHER_ISSUER), f"signed through OIDC issuer '{OTHER_ISSUER}'"),
    "bundle from another root": (sign_with({}, "other-lab"), "does not chain to a certificate authority"),
    "untrusted log key": (sign_with({"trust_log_key": False}, "rogue-log"), "not proven by a Rekor log key"),
    "old manifest replayed as new": (replay_old_manifest, "is signed for v0.1.0, not v0.3.0"),
    "built for another python": (other_python, "release v0.3.0 is built for cp39"),
    "wheel not the signed version": (mislabelled_wheel, "its banger wheel is v0.2.0"),
    "hostile tar member": (hostile_tar, "member '../escape.whl' is not a wheel file at the top level"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_releases_are_one_line_and_change_nothing(
    case: str, installed: Path, releases: Path, updater_env: dict[str, str], trust_lab: TrustLab
) -> None:
    spoil, expected = REFUSALS[case]
    spoil(releases, trust_lab)  # type: ignore[operator]
    before = tree(installed)
    code, out, err = update(installed, updater_env)
    assert code == 1 and out == ""
    line = error_line(err)
    assert expected in line, line
    assert tree(installed) == before


def test_a_bad_to_is_one_line(installed: Path, updater_env: dict[str, str]) -> None:
    code, _, err = update(installed, updater_env, "--to", "latest")
    assert code == 1
    assert (
        error_line(err) == "banger: error: --to 'latest' is not a release version: use vMAJOR.MINOR.PATCH, e.g. v0.2.0"
    )
    code, _, err = update(installed, updater_env, "--to", "v9.9.9")
    assert code == 1 and "/v9.9.9/manifest.json: no such file" in error_line(err)


def test_the_manifest_model_is_what_the_release_files_hold(published: Path) -> None:
    manifest = Manifest.from_json((published / manifest_path(Version(0, 2, 0))).read_bytes(), "m")
    assert (
        published / artifact_path(manifest.version, manifest.wheelhouse.name)
    ).stat().st_size == manifest.wheelhouse.size
    assert (published / signature_path(manifest.version)).exists()


def test_a_live_update_without_systemd_is_refused_in_one_line(installed: Path, updater_env: dict[str, str]) -> None:
    """This host's PID 1 is not systemd: a live update (no --root) has no services to swap."""
    env = {**updater_env, "BANGER_INSTALL_TOML": str(installed / "etc/banger/install.toml")}
    before = tree(installed)
    result = invoke_cli(["update"], env)
    assert result.exit_code == 1
    assert error_line(result.stderr) == (
        "banger: error: PID 1 is not systemd, so no service runs here: --root DIR updates a rendered install"
    )
    assert tree(installed) == before
