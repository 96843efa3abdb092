"""The API models write the JSON the API always wrote (keys, order, timestamps); stream events; the spec line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from banger_core.api.events import (
    CreatedEvent,
    EventSink,
    LogEvent,
    ProgressEvent,
    ProgressUpdate,
    SpecEvent,
    StepEvent,
    parse_event,
)
from banger_core.api.models import PlanValues, RunPlan, VmDetail, spec_line
from banger_core.api.ports import parse_publish
from banger_core.api.requests import CreateRequest, VmOptions
from banger_core.cli.vm_options import spec_body
from banger_core.daemon.images import image_view, kernel_view
from banger_core.daemon.state.models import Image, Kernel, Vm
from banger_core.daemon.vm.views import vm_detail, vm_view

CREATED = datetime(2026, 12, 1, 5, 59, 51, 620643, tzinfo=UTC)
STARTED = datetime(2026, 12, 1, 6, 0, 2, tzinfo=UTC)
SOURCES = {"vcpus": "host", "memory_mib": "flag", "disk_size": "host", "image": "config", "kernel": "image",
           "network": "default", "host_access": "flag", "backend": "auto: KVM"}  # fmt: skip


def running_vm() -> Vm:
    return Vm(
        id="0123abcd",
        name="dev",
        image="debian-bookworm",
        kernel="generic-6.1",
        backend="qemu",
        network="usernet",
        vcpus=2,
        memory_mib=2048,
        disk_size=8 << 30,
        guest_ip=None,
        mac="52:54:00:12:34:56",
        state="running",
        created_at=CREATED,
        started_at=STARTED,
        remove_on_exit=False,
        host_access=True,
        ports=[{"host_port": 8080, "guest_port": 80, "protocol": "tcp"}],
        spec_sources=SOURCES,
    )


HANDLES = {
    "vmm": {"pid": 4242},
    "net": {"ssh_host": "127.0.0.1", "ssh_port": 40213, "dns_address": None},
    "booted": "warm",
}


def test_a_vm_is_written_as_the_api_always_wrote_it() -> None:
    """The dict the daemon built by hand before the models, key for key and in order (``vm show --json``)."""
    wire = json.loads(vm_detail(running_vm(), HANDLES, Path("/state/vms/0123abcd/serial.log")).model_dump_json())
    assert list(wire.items()) == list(
        {
            "id": "0123abcd",
            "name": "dev",
            "state": "running",
            "image": "debian-bookworm",
            "kernel": "generic-6.1",
            "backend": "qemu",
            "network": "usernet",
            "vcpus": 2,
            "memory_mib": 2048,
            "disk_size": 8 << 30,
            "guest_ip": None,
            "mac": "52:54:00:12:34:56",
            "created_at": "2026-12-01T05:59:51.620643+00:00",
            "started_at": "2026-12-01T06:00:02+00:00",
            "last_error": None,
            "remove_on_exit": False,
            "host_access": True,
            "spec_sources": SOURCES,
            "pid": 4242,
            "ssh": {"host": "127.0.0.1", "port": 40213},
            "address": "127.0.0.1:40213",
            "ports": [{"host_port": 8080, "guest_port": 80, "protocol": "tcp", "host_address": "127.0.0.1"}],
            # Added with warm starts: a new key after the older ones.
            "booted": "warm",
            "serial_log": "/state/vms/0123abcd/serial.log",
        }.items()
    )
    assert VmDetail.model_validate(wire) == vm_detail(running_vm(), HANDLES, Path("/state/vms/0123abcd/serial.log"))


def test_a_stopped_vm_has_no_live_fields_whatever_its_stale_handles_say() -> None:
    vm = running_vm()
    vm.state = "stopped"
    view = vm_view(vm, HANDLES)
    assert (view.pid, view.ssh, view.address) == (None, None, None)
    assert "serial_log" not in view.model_dump()  # the list's entries never had it


def test_images_and_kernels_keep_their_keys_and_timestamp_format() -> None:
    image = Image(name="debian-bookworm", version="2026.11", source="catalog", kernel_ref="generic-6.1",
                  sha256="ab" * 32, size=1 << 30, created_at=CREATED, meta={"arch": "x86_64"},
                  reference="debian-bookworm")  # fmt: skip
    assert image_view(image, Path("/i/rootfs.ext4")).model_dump(mode="json") == {
        "name": "debian-bookworm",
        "version": "2026.11",
        "source": "catalog",
        "kernel_ref": "generic-6.1",
        "sha256": "ab" * 32,
        "size": 1 << 30,
        "created_at": "2026-12-01T05:59:51.620643+00:00",
        "path": "/i/rootfs.ext4",
        "meta": {"arch": "x86_64"},
        "reference": "debian-bookworm",
        "digest": None,
    }
    kernel = Kernel(ref="generic-6.1", version="6.1.0", provider="debian", boot_protocol=1,
                    sha256={"vmlinux": "cd" * 32}, created_at=CREATED, meta={})  # fmt: skip
    dumped = kernel_view(kernel, Path("/k")).model_dump(mode="json")
    assert list(dumped) == ["ref", "version", "provider", "boot_protocol", "sha256", "created_at", "path", "meta"]
    assert dumped["created_at"] == "2026-12-01T05:59:51.620643+00:00"


def plan(*, host_access: bool = False) -> RunPlan:
    values = PlanValues(vcpus=2, memory_mib=3013, disk_size=8 << 30, image="fake-tiny", image_present=True,
                        kernel="fake-kernel", network="usernet", host_access=host_access, backend="qemu")  # fmt: skip
    return RunPlan(values=values, sources=SOURCES)


def test_the_spec_line_names_every_value_and_its_source() -> None:
    assert spec_line(plan()) == (
        "spec: 2 vCPU (host), 3013 MiB RAM (flag), 8G disk (host), backend qemu (auto: KVM), "
        "network usernet (default), image fake-tiny (config), kernel fake-kernel (image)"
    )
    assert "network usernet (default) with host access, image" in spec_line(plan(host_access=True))
    published = plan().model_copy(
        update={
            "values": plan().values.model_copy(update={"ports": [parse_publish("8080:80"), parse_publish("53/udp")]})
        }
    )
    assert "network usernet (default), ports 80/tcp -> 127.0.0.1:8080, 53/udp -> 127.0.0.1:(auto), image" in (
        spec_line(published)
    )
    assert SpecEvent(plan=plan()).line == spec_line(plan())


def test_stream_lines_parse_into_their_event_and_unknown_kinds_are_skipped() -> None:
    spec = SpecEvent(plan=plan())
    assert parse_event(spec.model_dump_json()) == spec
    assert parse_event('{"event": "step", "message": "creating disks"}') == StepEvent(message="creating disks")
    assert parse_event('{"event": "snapshot-progress", "percent": 40}') is None
    assert parse_event("[1, 2]") is None
    with pytest.raises(ValueError, match="message"):
        parse_event('{"event": "step"}')


def test_event_sink_turns_progress_calls_into_typed_events(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[ProgressUpdate] = []
    sink = EventSink(seen.append, logging.getLogger("banger.test"))
    with caplog.at_level(logging.INFO, logger="banger.test"):
        sink.step("creating disks")
        sink.advance(1 << 20, 8 << 20)
        sink.log("mkfs.ext4 output")
        sink.event(CreatedEvent(name="dev"))
        sink.event(SpecEvent(plan=plan()))
    assert seen == [
        StepEvent(message="creating disks"),
        ProgressEvent(done=1 << 20, total=8 << 20, unit="B"),
        LogEvent(message="mkfs.ext4 output"),
        CreatedEvent(name="dev"),
        SpecEvent(plan=plan()),
    ]
    assert [r.getMessage() for r in caplog.records] == ["creating disks", spec_line(plan())]


def test_vm_options_are_create_request_fields_and_the_cli_fills_them_all() -> None:
    assert set(VmOptions.__annotations__) <= set(CreateRequest.model_fields)
    assert set(CreateRequest.model_fields) - set(VmOptions.__annotations__) == {"start", "remove_on_exit"}
    body = spec_body({"name": "dev", "vcpus": 2, "memory_mib": None, "host_access": None, "unrelated": 1})
    assert body == {"name": "dev", "image": None, "kernel": None, "backend": None, "network": None, "vcpus": 2,
                    "memory_mib": None, "disk_size": None, "host_access": False, "cold": False,
                    "ports": []}  # fmt: skip
