"""Tables of banger's state database: durable intent only.

Transient handles (pids, sockets, taps) live in each VM's ``handles.json``.
Columns here must match the migrations in :mod:`banger_core.daemon.state.db`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import JsonValue
from sqlalchemy import JSON, Column, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from banger_core.api.state import VmState


class VmStateText(TypeDecorator[VmState]):
    """A :class:`VmState` stored as its value, the same text as before the enum (``'running'``)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: VmState | None, dialect: Dialect) -> str | None:
        return None if value is None else VmState(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> VmState | None:
        return None if value is None else VmState(value)


class Vm(SQLModel, table=True):
    __tablename__ = "vms"

    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    image: str
    kernel: str
    backend: str
    network: str
    vcpus: int
    memory_mib: int
    disk_size: int
    guest_ip: str | None = Field(default=None, unique=True)
    mac: str = Field(unique=True)
    state: VmState = Field(default=VmState.CREATED, sa_type=VmStateText, nullable=False)
    created_at: datetime
    started_at: datetime | None = None
    last_error: str | None = None
    remove_on_exit: bool = False
    host_access: bool = False
    #: Published ports: ``{"host_port", "guest_port", "protocol"}`` each, host ports already picked.
    ports: list[dict[str, JsonValue]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    spec_sources: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Image(SQLModel, table=True):
    __tablename__ = "images"

    name: str = Field(primary_key=True)
    version: str
    source: str
    kernel_ref: str | None = None
    sha256: str
    size: int
    created_at: datetime
    meta: dict[str, JsonValue] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: What it was pulled by (``debian-bookworm``, ``registry/repo:tag``, ``register:/abs/rootfs.ext4``).
    reference: str | None = None
    #: The content digest that reference resolved to (OCI), when the source has one.
    digest: str | None = None


class Kernel(SQLModel, table=True):
    __tablename__ = "kernels"

    ref: str = Field(primary_key=True)
    version: str
    provider: str
    boot_protocol: int
    sha256: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime
    meta: dict[str, JsonValue] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
