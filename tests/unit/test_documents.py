"""``ctx.fetch_document``: routed by the daemon's Runtime to the artifact publisher claiming the reference.

A third-party publisher (a real plugin through its entry point) shows what the core guarantees whatever the
plugin does: its document passes through, its unreachability stays ``SourceUnavailable``, anything else it
raises becomes ``DocumentRefused`` with one line, and the size bound holds.
"""

from __future__ import annotations

import pytest

from banger_core.daemon.runtime import Runtime
from banger_core.testing import FakeSite, make_plugin_context
from banger_hookspecs import DocumentRefused, FetchedDocument, SourceUnavailable

pytestmark = pytest.mark.unit

ACME = """
from banger_hookspecs import hookimpl, ArtifactPublisher, FetchedDocument, SourceUnavailable

class AcmeRefusal(Exception):
    pass

class Acme:
    def claims(self, target):
        return target.startswith("acme:")

    def publish(self, bundle, manifest, target, progress):
        raise AcmeRefusal("not used here")

    def fetch_document(self, reference, *, artifact_type, media_type, max_size):
        what = reference.removeprefix("acme:")
        if what == "down":
            raise SourceUnavailable("acme store is down")
        if what == "refuse":
            raise AcmeRefusal(f"acme:refuse is not a {artifact_type} artifact: check the reference")
        if what == "bug":
            return {}["bug"]
        data = b"x" * (max_size + 1) if what == "big" else f"{artifact_type} {media_type} {max_size}".encode()
        return FetchedDocument(data=data, reference=f"acme:{what}@1", digest="1")

@hookimpl
def banger_artifact_publishers():
    return [ArtifactPublisher("acme-docs", "documents in the acme store", lambda ctx: Acme())]
"""


@pytest.fixture
def runtime(banger_site: FakeSite, banger_env: dict[str, str]) -> Runtime:
    banger_site.add_plugin("acme", "acme-banger", source=ACME)
    return Runtime(banger_env)


def fetch(rt: Runtime, reference: str) -> FetchedDocument:
    return rt.ctx.fetch_document(reference, artifact_type="a/t", media_type="m/t", max_size=64)


def test_the_claiming_publisher_fetches_the_document(runtime: Runtime) -> None:
    assert fetch(runtime, "acme:ok") == FetchedDocument(data=b"a/t m/t 64", reference="acme:ok@1", digest="1")


def test_an_unreachable_location_stays_unavailable(runtime: Runtime) -> None:
    with pytest.raises(SourceUnavailable, match=r"^acme store is down$"):
        fetch(runtime, "acme:down")


def test_a_refusal_becomes_document_refused_with_the_plugins_sentence(runtime: Runtime) -> None:
    with pytest.raises(DocumentRefused, match=r"^acme:refuse is not a a/t artifact: check the reference$"):
        fetch(runtime, "acme:refuse")


def test_a_plugin_bug_is_refused_with_its_type(runtime: Runtime) -> None:
    with pytest.raises(
        DocumentRefused, match=r"^artifact publisher acme-docs failed to fetch acme:bug: KeyError: 'bug'$"
    ):
        fetch(runtime, "acme:bug")


def test_the_size_bound_holds_whatever_the_plugin_returns(runtime: Runtime) -> None:
    with pytest.raises(DocumentRefused, match=r"^acme:big@1 holds more than 64 bytes: refused$"):
        fetch(runtime, "acme:big")


@pytest.mark.builtins
def test_a_reference_nobody_claims_is_unavailable(runtime: Runtime) -> None:
    with pytest.raises(
        SourceUnavailable, match=r"^no artifact publisher understands 'no such thing' \(asked: acme-docs, oci\)$"
    ):
        fetch(runtime, "no such thing")  # nobody claims it, not even oci (a builtin: not under tox -e core)


def test_outside_the_daemon_the_context_refuses(banger_env: dict[str, str]) -> None:
    ctx = make_plugin_context(banger_env)  # the CLI's context: no publishers behind it

    with pytest.raises(SourceUnavailable, match=r"^acme:ok can be fetched only by the daemon"):
        ctx.fetch_document("acme:ok", artifact_type="a/t", media_type="m/t", max_size=64)
