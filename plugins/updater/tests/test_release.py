"""The release model: hostile manifests and indexes are refused in one line; what is built round-trips."""

from __future__ import annotations

import json

import pytest

from banger_core.common.errors import BangerError
from banger_updater.release import (
    MAX_MANIFEST_BYTES,
    Artifact,
    Manifest,
    ReleaseIndex,
    Version,
    artifact_path,
    host_platform,
    host_python,
    manifest_path,
    signature_path,
)

pytestmark = pytest.mark.unit

GOOD: dict[str, object] = {
    "schema": 1,
    "name": "banger",
    "version": "v0.2.0",
    "commit": "a" * 40,
    "built_at": "2026-12-01T00:00:00Z",
    "python": "cp311",
    "platform": "manylinux_x86_64",
    "artifacts": [{"name": "banger-v0.2.0-wheelhouse.tar", "kind": "wheelhouse", "sha256": "b" * 64, "size": 123}],
}


ARTIFACT: dict[str, object] = GOOD["artifacts"][0]  # type: ignore[index]


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def with_(**changes: object) -> bytes:
    return dumps({**GOOD, **changes})


def test_a_good_manifest_parses_and_round_trips() -> None:
    manifest = Manifest.from_json(dumps(GOOD), "m")
    assert manifest.version == Version(0, 2, 0) and str(manifest.version) == "v0.2.0"
    assert manifest.wheelhouse == Artifact("banger-v0.2.0-wheelhouse.tar", "wheelhouse", "b" * 64, 123)
    assert json.loads(manifest.to_json()) == GOOD
    assert Manifest.from_json(manifest.to_json(), "again") == manifest


def test_versions_order_numerically_and_refuse_other_forms() -> None:
    assert Version.parse("v0.10.0") > Version.parse("v0.9.9") > Version.parse("v0.9.0")
    for bad in ("0.1.0", "v1.2", "v01.2.3", "v1.2.3-rc1", "v1.2.3\n", " v1.2.3", "dev", 3):
        with pytest.raises(BangerError, match=r"is not a release version: use vMAJOR\.MINOR\.PATCH"):
            Version.parse(bad, what="--to")
    assert Version.is_release("v1.0.0") and not Version.is_release("dev")


def test_paths_below_the_release_url() -> None:
    version = Version(1, 2, 3)
    assert manifest_path(version) == "v1.2.3/manifest.json"
    assert signature_path(version) == "v1.2.3/manifest.json.sigstore.json"
    assert artifact_path(version, "w.tar") == "v1.2.3/w.tar"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[" * 100_000, "more than the"),
        (b'{"schema": 1, "schema": 1}', "appears twice"),
        (b'{"size": NaN}', "NaN is not JSON"),
        (dumps([GOOD]), "expected a JSON object, got list"),
        (with_(extra=1), "unknown key 'extra'"),
        (dumps({k: v for k, v in GOOD.items() if k != "commit"}), "key 'commit' is missing"),
        (with_(schema=2), "schema 2 is not schema 1"),
        (with_(schema=True), "'schema' is True, expected an integer"),
        (with_(name="other"), "'name' is 'other', not 'banger'"),
        (with_(version="v1"), "'version' 'v1' is not a release version"),
        (with_(commit="A" * 40), "'commit' is 'AAAA"),
        (with_(built_at="2026-13-01T00:00:00Z"), "is not a date and time"),
        (with_(built_at="yesterday"), "expected the form 2026-12-01T00:00:00Z"),
        (with_(python="py3"), "'python' is 'py3'"),
        (with_(platform="Linux x86"), "'platform' is 'Linux x86'"),
        (with_(artifacts={}), "'artifacts' must be a list"),
        (with_(artifacts=[]), "exactly one artifact of kind 'wheelhouse'"),
        (with_(artifacts=[{**ARTIFACT, "name": f"w{i}"} for i in range(17)]), "at most 16"),
    ],
)
def test_hostile_manifests_are_refused_in_one_line(data: bytes, problem: str) -> None:
    with pytest.raises(BangerError) as caught:
        Manifest.from_json(data, "https://example.test/v0.2.0/manifest.json")
    message = str(caught.value)
    assert problem in message and "\n" not in message, message
    assert message.startswith("https://example.test/v0.2.0/manifest.json")
    assert len(message) < 400


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        ({**ARTIFACT, "name": "../etc/passwd"}, "'name' is '../etc/passwd'"),
        ({**ARTIFACT, "name": "a/b.tar"}, "'name' is 'a/b.tar'"),
        ({**ARTIFACT, "name": ".hidden"}, "'name' is '.hidden'"),
        ({**ARTIFACT, "name": "manifest.json"}, "is reserved"),
        ({**ARTIFACT, "name": "x.sigstore.json"}, "is reserved"),
        ({**ARTIFACT, "sha256": "b" * 63}, "64 lowercase hex digits"),
        ({**ARTIFACT, "size": 0}, "'size' is 0"),
        ({**ARTIFACT, "size": 2**40}, "'size' is 1099511627776"),
        ({**ARTIFACT, "size": "12"}, "'size' is '12'"),
        ({**ARTIFACT, "mode": 7}, "unknown key 'mode'"),
    ],
)
def test_hostile_artifacts_are_refused(artifact: dict[str, object], problem: str) -> None:
    with pytest.raises(BangerError, match="artifact 0") as caught:
        Manifest.from_json(with_(artifacts=[artifact]), "m")
    assert problem in str(caught.value)


def test_two_artifacts_with_one_name_are_refused() -> None:
    with pytest.raises(BangerError, match="two artifacts have the same name"):
        Manifest.from_json(with_(artifacts=[ARTIFACT, {**ARTIFACT, "kind": "other"}]), "m")


def test_a_manifest_built_in_code_is_validated_when_written() -> None:
    good = Manifest.from_json(dumps(GOOD), "m")
    bad = Manifest(good.version, "not hex", good.built_at, good.python, good.platform, good.artifacts)
    with pytest.raises(BangerError, match="'commit' is 'not hex'"):
        bad.to_json()


def test_the_index_lists_sorted_versions_and_refuses_bad_ones() -> None:
    index = ReleaseIndex.from_json(b'{"schema": 1, "releases": ["v0.10.0", "v0.2.0"]}', "i")
    assert index.newest == Version(0, 10, 0)
    assert json.loads(index.adding(Version(0, 3, 0)).to_json()) == {
        "schema": 1,
        "releases": ["v0.2.0", "v0.3.0", "v0.10.0"],
    }
    assert ReleaseIndex.from_json(b'{"schema": 1, "releases": []}', "i").newest is None
    for bad, problem in [
        (b'{"schema": 1, "releases": ["latest"]}', "release 'latest' is not a release version"),
        (b'{"schema": 1, "releases": ["v1.0.0", "v1.0.0"]}', "listed twice"),
        (b'{"schema": 1}', "'releases' is missing"),
    ]:
        with pytest.raises(BangerError, match=problem):
            ReleaseIndex.from_json(bad, "i")


def test_manifest_size_is_bounded() -> None:
    with pytest.raises(BangerError, match=f"more than the {MAX_MANIFEST_BYTES}"):
        Manifest.from_json(b" " * (MAX_MANIFEST_BYTES + 1), "m")


def test_host_tags_have_the_manifest_forms() -> None:
    assert host_python().startswith("cp3")
    assert host_platform() in {"manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64", "musllinux_aarch64"}
