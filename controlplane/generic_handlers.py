"""Services on a grpc.aio server through its generic handlers only.

The generated `add_*Servicer_to_server` functions register every method twice: as a generic
handler and as a "registered method". grpc.aio (1.85) keeps one pending call request per
registered method, plus one for the generic handlers, and its accept loop hands each new call
to `asyncio.wait` over all of them: with Raft and Control alone that is 13 futures added to and
removed from per accepted call (each checked with `iscoroutine`, an ABC `isinstance`), with a
full manager's services about twice that. Served through the generic handlers only, the loop
waits on one future; the methods, their (de)serializers and the interceptors are the same.
(`accept_pumps.py` registers a few hot unary methods again, for its extra call requests.)
Measured with 64 unary writers on a leader (bench/README.md, branch `raftperf7`): its CPU per
write 0.96 of before, its event loop's thread 0.92-0.94, in two paired runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import grpc


class GenericHandlersOnly:
    """What the generated registration functions are given instead of the server: the
    generic handlers go through, the registered-method copies of the same methods do not."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.handlers: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)
        self.handlers.extend(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Not passed on: the same methods arrived through `add_generic_rpc_handlers`."""


def register_generic(
    server: grpc.aio.Server, registrations: Sequence[Callable[[grpc.aio.Server], Any]]
) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """Run each registration (a generated `add_*Servicer_to_server` call, or a function making
    one) against `server`, keeping only the generic handlers; returns them (what
    `accept_pumps.AcceptPumps` resolves its methods with)."""
    registrar = GenericHandlersOnly(server)
    for register in registrations:
        register(cast(grpc.aio.Server, registrar))
    return registrar.handlers
