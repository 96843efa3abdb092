"""The .vm zone's answers, packet in, packet out (no sockets: see tests/integration/test_dns.py)."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from banger_core.daemon.dns import DnsServer, RateLimitedLog, VmZone

pytestmark = pytest.mark.unit

VMS = {"web": "172.16.0.7"}


class CountingLookup:
    """A lookup over a dict that the test can change, remembering every name asked."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)
        self.asked: list[str] = []

    def __call__(self, name: str) -> str | None:
        self.asked.append(name)
        return self.table.get(name)


def ask(zone: VmZone, name: str, qtype: str = "A", **header: int) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    for key, value in header.items():
        setattr(query.header, key, value)
    packet = zone.answer(query.pack())
    assert packet is not None
    reply = DNSRecord.parse(packet)
    assert (reply.header.id, reply.header.qr, reply.header.ra) == (query.header.id, 1, 0)
    return reply


def test_a_record_of_a_known_vm_is_authoritative_with_ttl_5() -> None:
    reply = ask(VmZone(CountingLookup(VMS)), "web.vm")

    assert (reply.header.rcode, reply.header.aa) == (RCODE.NOERROR, 1)
    assert [(str(rr.rname), rr.rtype, rr.ttl, str(rr.rdata)) for rr in reply.rr] == [
        ("web.vm.", QTYPE.A, 5, "172.16.0.7")
    ]
    assert reply.auth == []


def test_names_are_case_insensitive_and_the_question_case_is_kept() -> None:
    lookup = CountingLookup(VMS)
    reply = ask(VmZone(lookup), "WeB.Vm")

    assert lookup.asked == ["web"]
    assert str(reply.rr[0].rname) == "WeB.Vm."


def test_other_types_of_a_known_vm_are_empty_noerror_with_the_soa() -> None:
    for qtype in ("AAAA", "MX", "TXT"):
        reply = ask(VmZone(CountingLookup(VMS)), "web.vm", qtype)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])
        assert [(str(rr.rname), rr.rtype, rr.ttl) for rr in reply.auth] == [("vm.", QTYPE.SOA, 5)]


def test_unknown_and_deeper_names_are_nxdomain_with_the_soa() -> None:
    lookup = CountingLookup(VMS)
    zone = VmZone(lookup)
    for name in ("gone.vm", "x.web.vm", "-bad-.vm", "under_score.vm"):
        reply = ask(zone, name)
        assert (reply.header.rcode, reply.header.aa, reply.rr) == (RCODE.NXDOMAIN, 1, [])
        assert reply.auth[0].rtype == QTYPE.SOA
    assert lookup.asked == ["gone"]  # names no VM can have never reach the lookup


def test_the_lookup_is_asked_on_every_query() -> None:
    lookup = CountingLookup(VMS)
    zone = VmZone(lookup)

    assert ask(zone, "web.vm").header.rcode == RCODE.NOERROR
    del lookup.table["web"]
    assert ask(zone, "web.vm").header.rcode == RCODE.NXDOMAIN
    lookup.table["web"] = "172.16.0.9"
    assert str(ask(zone, "web.vm").rr[0].rdata) == "172.16.0.9"


def test_names_outside_the_zone_are_refused_without_recursion() -> None:
    lookup = CountingLookup(VMS)
    for name in ("example.com", "vm.example.com", "web.vmx", "."):
        reply = ask(VmZone(lookup), name, rd=1)
        assert (reply.header.rcode, reply.header.aa, reply.header.ra) == (RCODE.REFUSED, 0, 0)
        assert reply.rr == reply.auth == []
    assert lookup.asked == []


def test_the_zone_apex_has_only_its_soa() -> None:
    zone = VmZone(CountingLookup(VMS))

    soa = ask(zone, "vm", "SOA")
    assert [(rr.rtype, str(rr.rdata.mname)) for rr in soa.rr] == [(QTYPE.SOA, "ns.vm.")]
    other = ask(zone, "vm", "A")
    assert (other.header.rcode, other.rr, other.auth[0].rtype) == (RCODE.NOERROR, [], QTYPE.SOA)


def test_chaos_class_is_refused() -> None:
    query = DNSRecord(q=DNSQuestion("version.vm", QTYPE.TXT, 3))
    reply = DNSRecord.parse(VmZone(CountingLookup(VMS)).answer(query.pack()) or b"")
    assert reply.header.rcode == RCODE.REFUSED


def test_a_failing_or_lying_lookup_gives_servfail() -> None:
    def broken(name: str) -> str | None:
        raise RuntimeError("database is locked")

    assert ask(VmZone(broken), "web.vm").header.rcode == RCODE.SERVFAIL
    assert ask(VmZone(lambda name: "not-an-ip"), "web.vm").header.rcode == RCODE.SERVFAIL
    assert ask(VmZone(lambda name: "fe80::1"), "web.vm").header.rcode == RCODE.SERVFAIL


def test_edns_is_answered_and_unknown_versions_get_badvers() -> None:
    zone = VmZone(CountingLookup(VMS))
    query = DNSRecord.question("web.vm")
    query.add_ar(EDNS0(udp_len=4096))
    reply = DNSRecord.parse(zone.answer(query.pack()) or b"")
    assert [(rr.rtype, rr.rclass) for rr in reply.ar] == [(QTYPE.OPT, 1232)]
    assert len(reply.rr) == 1

    query.ar = [EDNS0(udp_len=4096, version=1)]
    reply = DNSRecord.parse(zone.answer(query.pack()) or b"")
    assert reply.rr == []
    assert reply.ar[0].ttl >> 24 == 1  # extended rcode 1 + rcode 0 = BADVERS


def test_non_queries_and_odd_question_counts() -> None:
    zone = VmZone(CountingLookup(VMS))

    notify = DNSRecord.question("web.vm")
    notify.header.opcode = 4
    assert DNSRecord.parse(zone.answer(notify.pack()) or b"").header.rcode == RCODE.NOTIMP

    empty = DNSRecord(DNSHeader(id=7))
    assert DNSRecord.parse(zone.answer(empty.pack()) or b"").header.rcode == RCODE.FORMERR

    two = DNSRecord.question("web.vm")
    two.add_question(DNSQuestion("gone.vm"))
    assert DNSRecord.parse(zone.answer(two.pack()) or b"").header.rcode == RCODE.FORMERR


def test_malformed_packets_and_responses_get_no_answer_and_a_rate_limited_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    zone = VmZone(CountingLookup(VMS), logger=logging.getLogger("test.dns"))
    valid = DNSRecord.question("web.vm").pack()
    header = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    junk = [
        b"",
        b"\x00",
        valid[:15],
        header + b"\xc0\x0c\x00\x01\x00\x01",  # a compression pointer to itself
        header + b"\x3f" + b"a" * 10,  # a label longer than the packet
        bytes(range(256)),
    ]
    response = DNSRecord.question("web.vm").reply().pack()

    with caplog.at_level(logging.WARNING, logger="test.dns"):
        assert [zone.answer(p, ("192.0.2.1", 5353)) for p in [*junk, response]] == [None] * (len(junk) + 1)

    assert len(caplog.records) == 1
    assert "dropped a malformed DNS packet from ('192.0.2.1', 5353)" in caplog.records[0].getMessage()
    assert zone.warn.suppressed == len(junk)


def test_rate_limited_log_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("test.rate"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rate"):
        for second in range(25):
            now[0] = 100.0 + second
            limited.warning("bad packet %d", second)

    assert [r.getMessage() for r in caplog.records] == [
        "bad packet 0",
        "bad packet 10 (9 similar messages suppressed)",
        "bad packet 20 (9 similar messages suppressed)",
    ]


@pytest.mark.parametrize(
    ("binds", "message"),
    [
        ([("0.0.0.0", 53)], "would serve every network"),
        ([("::1", 53)], "not an IPv4 address"),
        ([("localhost", 53)], "not an IPv4 address"),
        ([("127.0.0.1", 65536)], "not between 0 and 65535"),
        ([], "at least one address"),
    ],
)
def test_bad_bind_addresses_are_refused_before_binding(binds: list[tuple[str, int]], message: str) -> None:
    server = DnsServer(CountingLookup(VMS))
    with pytest.raises(ValueError, match=message):
        asyncio.run(server.start(binds))
    assert server.addresses == []
