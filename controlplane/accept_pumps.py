"""Extra pending call requests for a grpc.aio server's hot unary methods ("accept pumps").

Why: grpc.aio accepts calls one after another. Its server main loop
(`AioServer._server_main_loop` in grpc's
`src/python/grpcio/grpc/_cython/_cygrpc/aio/server.pyx.pxi`) keeps exactly ONE pending call
request per registered method plus one for the generic handlers, and asks for the next call
only once the previous request's completion has come through the completion-queue poller
thread and about three turns of the event loop. With 64 unary writers the calls queue in
gRPC core, 8-13 ms before the handler, while the leader's loop is busy only 55-65% of the
time. With more requests pending, core hands over the calls as they arrive, several per
wake-up of the loop: fewer wake-ups and hand-offs per call. (Upstream, grpc/grpc PR #43436
"Increased AsyncIO server main loop throughput" is open; when a release accepts calls
concurrently itself, this module can go.)

How: each hot method is also registered with the server (core lets a request name only a
registered method, and the method of a call taken through a generic request is not readable
from Python), with the very handler its generic handler serves. After `server.start()`,
`per_method` pump tasks per method each loop: request a call of the method, start it exactly
as the main loop does (`_handle_rpc` run by `_schedule_rpc_coro`, with the server's generic
handlers and interceptors: same statuses, aborts, deadlines, metadata, authorization), request
the next. A request fails when the server shuts down: that ends its pump.

These are private internals, checked against grpcio 1.85 (`CHECKED_GRPCIO`): names present,
callables with the parameters read there. When anything differs, or a call raises TypeError,
`event=grpc_accept_pumps_unavailable reason=...` is logged once and the server serves as
grpc.aio alone does. The pumps bypass grpc.aio's concurrency limiter (not readable from
Python), so they are for servers made without `maximum_concurrent_rpcs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import grpc

# Not in grpc's type stubs: everything used from it is checked at run time instead.
cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")

log = logging.getLogger("controlplane.accept_pumps")

CHECKED_GRPCIO: Final = "1.85."
# The hot unary methods on a leader: the benchmark's and clients' writes, followers' read
# barriers and forwarded proposals. Those the server does not serve are skipped.
HOT_UNARY_METHODS: Final = (
    "/controlplane.v1.Control/Write",
    "/controlplane.v1.Raft/ReadIndex",
    "/controlplane.v1.Raft/Propose",
)
PUMPS_ENV: Final = "SWARMLAB_ACCEPT_PUMPS"
DEFAULT_PER_METHOD: Final = 4  # the best of 1, 2, 4 and 8 in bench/README.md (session 10)
MAX_PER_METHOD: Final = 64
DRAIN_SECONDS: Final = 5.0

# The private callables used, with the parameters they were checked with.
_FUNCTIONS: Final = {
    "_handle_rpc": (
        "method_name",
        "method_resolver",
        "interceptors",
        "rpc_state",
        "loop",
        "concurrency_exceeded",
    ),
    "_schedule_rpc_coro": ("rpc_coro", "rpc_state", "loop", "method_name"),
}
_SERVER_METHODS: Final = {
    "_request_registered_call": ("self", "method"),
    "is_running": ("self",),
}


def per_method_from_env() -> int:
    """Pumps per hot method: `SWARMLAB_ACCEPT_PUMPS` (0 turns them off), else the default."""
    text = os.environ.get(PUMPS_ENV, "").strip()
    if not text:
        return DEFAULT_PER_METHOD
    if not text.isdigit() or int(text) > MAX_PER_METHOD:
        raise ValueError(
            f"{PUMPS_ENV}={text!r}: expected a whole number of extra pending call requests per "
            f"hot method, 0 to {MAX_PER_METHOD} (0 turns them off); unset it for the default "
            f"{DEFAULT_PER_METHOD}"
        )
    return int(text)


@functools.cache
def _report_unavailable(reason: str) -> None:
    """Logged once per reason and process: servers are started again and again in a node."""
    log.warning("event=grpc_accept_pumps_unavailable reason=%r", reason)


def _parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def unavailable_reason(server: grpc.aio.Server) -> str | None:
    """Why the pumps cannot run on `server` with this grpcio, or None when they can."""
    if not grpc.__version__.startswith(CHECKED_GRPCIO):
        return f"grpcio {grpc.__version__} is not the {CHECKED_GRPCIO}x checked"
    aio = getattr(server, "_server", None)
    if not isinstance(aio, cygrpc.AioServer):
        return "the server has no cygrpc.AioServer as _server"
    if not isinstance(getattr(cygrpc, "_MethodResolver", None), type):
        return "cygrpc._MethodResolver is missing"
    error = getattr(cygrpc, "_RequestCallError", None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        return "cygrpc._RequestCallError is missing"
    wanted = [(cygrpc, name, params) for name, params in _FUNCTIONS.items()]
    wanted += [(cygrpc.AioServer, name, params) for name, params in _SERVER_METHODS.items()]
    for owner, name, params in wanted:
        function = getattr(owner, name, None)
        if not callable(function):
            return f"{name} is missing"
        try:
            found = _parameters(function)
        except (TypeError, ValueError):
            return f"{name} has no readable signature"
        if found != params:
            return f"{name} takes {found}, checked with {params}"
    return None


class _CallDetails(NamedTuple):
    """What a generic handler is asked with (`grpc.HandlerCallDetails`)."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


def _served_handler(
    handlers: Sequence[grpc.GenericRpcHandler[Any, Any]], method: str
) -> grpc.RpcMethodHandler[Any, Any] | None:
    details: Any = _CallDetails(method, ())
    for handler in handlers:
        found = handler.service(details)
        if found is not None:
            return found
    return None


class AcceptPumps:
    """The extra call requests of one server; `register` before `server.start()`, `start`
    after it, `drain` after `server.stop()`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        handlers: Sequence[grpc.GenericRpcHandler[Any, Any]],
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]],
        per_method: int,
    ) -> None:
        self._server = server
        self._handlers = list(handlers)
        self._interceptors = tuple(interceptors)
        self._methods = methods
        self._per_method = per_method
        self._pumps: set[asyncio.Task[None]] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self.accepted = 0  # calls the pumps took (the rest went through grpc.aio's own loop)

    @classmethod
    def register(
        cls,
        server: grpc.aio.Server,
        handlers: Sequence[grpc.GenericRpcHandler[Any, Any]],
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        methods: Sequence[str] = HOT_UNARY_METHODS,
        per_method: int | None = None,
    ) -> AcceptPumps:
        """Register those of `methods` that `handlers` serve as registered methods of the
        (not yet started) `server`; `interceptors` must be the server's own. Pumps that
        cannot run (turned off, or grpcio's internals differ) register nothing and do
        nothing."""
        count = per_method_from_env() if per_method is None else per_method
        if count <= 0:
            return cls(server, handlers, interceptors, {}, 0)
        reason = unavailable_reason(server)
        if reason is not None:
            _report_unavailable(reason)
            return cls(server, handlers, interceptors, {}, 0)
        served: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in methods:
            handler = _served_handler(handlers, method)
            if handler is not None and not handler.request_streaming:
                _, service, name = method.split("/")
                # Public in grpc.aio, missing from its type stubs.
                registrar: Any = server
                registrar.add_registered_method_handlers(service, {name: handler})
                served[method] = handler
        return cls(server, handlers, interceptors, served, count)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods pumped (none when the pumps are off or unavailable)."""
        return tuple(self._methods)

    @property
    def running(self) -> int:
        """Pumps still requesting calls."""
        return len(self._pumps)

    def start(self) -> None:
        """Start the pumps of a started server."""
        if not self._methods:
            return
        aio = self._server._server  # type: ignore[attr-defined]
        try:
            resolver = cygrpc._MethodResolver(self._handlers, dict(self._methods))
        except TypeError as err:
            _report_unavailable(f"_MethodResolver: {err}")
            return
        for method in self._methods:
            for _ in range(self._per_method):
                pump = asyncio.create_task(self._pump(aio, resolver, method), name=f"pump {method}")
                self._pumps.add(pump)
                pump.add_done_callback(self._pumps.discard)

    async def _pump(self, aio: Any, resolver: Any, method: str) -> None:
        loop = asyncio.get_running_loop()
        method_bytes = method.encode()
        # Checked before every request: one made on a stopped server would reach freed core
        # state (grpc.aio's own loop checks the same before it re-arms).
        while aio.is_running():
            try:
                rpc_state = await aio._request_registered_call(method_bytes)
            except cygrpc._RequestCallError:
                continue  # the server is shutting down (or core refused): the loop re-checks
            except TypeError as err:
                _report_unavailable(f"_request_registered_call: {err}")
                return
            except Exception as err:  # a pump ends; it never leaves an exception unretrieved
                log.error("event=grpc_accept_pump_failed method=%s error=%r", method, err)
                return
            self.accepted += 1
            try:
                call = loop.create_task(
                    cygrpc._schedule_rpc_coro(
                        cygrpc._handle_rpc(
                            method, resolver, self._interceptors, rpc_state, loop, False
                        ),
                        rpc_state,
                        loop,
                        method,
                    ),
                    name=f"call {method}",
                )
            except TypeError as err:
                # The accepted call is dropped with its state: core cancels it.
                _report_unavailable(f"_handle_rpc or _schedule_rpc_coro: {err}")
                return
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def drain(self) -> None:
        """Once the server has stopped: wait for every pump to see its last request fail and
        for the calls they started to end (bounded; what is left then is cancelled)."""
        if self._server._server.is_running():  # type: ignore[attr-defined]
            raise RuntimeError("stop the server before draining its accept pumps")
        for tasks in (self._pumps, self._calls):
            if not tasks:
                continue
            _, late = await asyncio.wait(set(tasks), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
