"""``RootHelperHostOps``: :class:`banger_hookspecs.HostOps` for a daemon running as its owner, via ``bangerd-root``.

Each method is one call over the helper's socket (protocol:
:mod:`banger_core.host.rootproto`); the helper answers with the result or
with the error the root implementation raised, which is raised here again
(``ValueError`` for a refused argument, the :class:`BangerError` subclass
otherwise). This module imports no netlink code: the daemon needs none.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import cast

from banger_core.common.errors import ERRORS_BY_NAME, HostOpError, Unavailable
from banger_core.host.rootproto import (
    ProtocolError,
    check_value,
    close_all,
    host_ops_methods,
    recv_frame,
    returns_socket,
    send_frame,
    to_json,
)

#: Creating a bridge with NAT, or a jailed VMM, takes well under this.
CALL_TIMEOUT = 120.0


class RootHelperHostOps:
    """Host ops performed by the root helper listening on ``socket_path``.

    Example::

        ops = RootHelperHostOps(Path("/run/banger-root/bangerd-root.sock"))
        ops.ensure_bridge("banger0", "172.16.0.1/24")
    """

    def __init__(self, socket_path: Path, timeout: float = CALL_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, method: str, **args: object) -> object:
        """Call ``method`` of the helper's HostOps with ``args``; its result, typed as the protocol says.

        Raises:
            ValueError: the helper refused an argument (its message says which).
            Unavailable: no helper answers on the socket.
            BangerError: the operation failed (the helper's class and sentence).
        """
        spec = host_ops_methods()[method]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout)
            try:
                conn.connect(str(self.socket_path))
            except OSError as exc:
                raise Unavailable(
                    f"the root helper does not answer on {self.socket_path}: {exc.strerror or exc}: "
                    "start it (`sudo systemctl start bangerd-root`), or unset BANGER_ROOT_HELPER"
                ) from None
            try:
                try:
                    send_frame(conn, {"method": method, "args": to_json(args)})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a refused peer is answered and hung up on before it is heard: read why
                answer, fds = recv_frame(conn)
            except (OSError, ProtocolError) as exc:
                raise HostOpError(f"{method} through the root helper failed: {exc}") from None
        try:
            return self._result(method, answer, fds, returns_socket(spec), spec.returns)
        finally:
            close_all(fds)

    @staticmethod
    def _result(method: str, answer: object, fds: list[int], wants_socket: bool, returns: object) -> object:
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            kind, message = str(answer["error"].get("type")), str(answer["error"].get("message"))
            if kind == "ValueError":
                raise ValueError(message)
            if kind == "ProtocolError":
                raise HostOpError(f"the root helper refused {method}: {message}")
            raise ERRORS_BY_NAME.get(kind, HostOpError)(message)
        if not isinstance(answer, dict) or set(answer) != {"result"}:
            raise HostOpError(f"the root helper answered {method} with something that is not a result")
        if wants_socket:
            if not fds:
                raise HostOpError(f"the root helper answered {method} without a socket")
            return socket.socket(fileno=fds.pop(0))  # the rest, if any, are closed by the caller
        try:
            return check_value(answer["result"], returns, f"the result of {method}")
        except ProtocolError as exc:
            raise HostOpError(f"the root helper answered badly: {exc}") from None

    def __getattr__(self, name: str) -> Callable[..., object]:
        """A ``HostOps`` method without a line below (added to the protocol later): forwarded by name.

        Positional arguments are named after the protocol's parameters.
        """
        spec = host_ops_methods().get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def forward(*args: object, **kwargs: object) -> object:
            if len(args) > len(spec.params):
                raise TypeError(f"{name} takes {len(spec.params)} arguments, {len(args)} given")
            return self.call(name, **dict(zip(spec.params, args, strict=False)), **kwargs)

        return forward

    # One line per HostOps method, for readers and type checkers: the helper validates, this side forwards.

    def ensure_bridge(self, name: str, address: str) -> bool:
        return cast(bool, self.call("ensure_bridge", name=name, address=address))

    def delete_bridge(self, name: str) -> None:
        self.call("delete_bridge", name=name)

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        self.call("create_tap", name=name, bridge=bridge, owner_uid=owner_uid)

    def rename_tap(self, name: str, new_name: str) -> None:
        self.call("rename_tap", name=name, new_name=new_name)

    def delete_tap(self, name: str) -> None:
        self.call("delete_tap", name=name)

    def list_links(self, prefix: str) -> list[str]:
        return cast("list[str]", self.call("list_links", prefix=prefix))

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        self.call("ensure_nat", cidr=cidr, bridge=bridge)

    def remove_nat(self, cidr: str, bridge: str) -> None:
        self.call("remove_nat", cidr=cidr, bridge=bridge)

    def host_routes(self) -> list[str]:
        return cast("list[str]", self.call("host_routes"))

    def bind_dns_socket(self, address: str, port: int) -> socket.socket:
        return cast(socket.socket, self.call("bind_dns_socket", address=address, port=port))

    def route_dns(self, link: str, server: str, domain: str) -> None:
        self.call("route_dns", link=link, server=server, domain=domain)

    def spawn_jailed_vmm(
        self, jailer: str, firecracker: str, vm_id: str, uid: int, gid: int, chroot_base: str, console_fifo: str
    ) -> int:
        return cast(
            int,
            self.call(
                "spawn_jailed_vmm",
                jailer=jailer,
                firecracker=firecracker,
                vm_id=vm_id,
                uid=uid,
                gid=gid,
                chroot_base=chroot_base,
                console_fifo=console_fifo,
            ),
        )
