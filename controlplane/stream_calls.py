"""Many requests in flight on one bidirectional gRPC call, each answered on its own.

A message on an open stream costs grpc.aio two completions where a unary call costs four (see
bench/README.md), so the callers that send a steady flow of small requests to one manager use
a stream: a client's writes (`Control/WriteStream`) and a follower forwarding its writes to
the leader (`Raft/ProposeStream`). Both ends are the same for both services:

- `StreamAnswers` (server): each request runs in a task of its own, so answers may come back
  out of order; each answer carries a key naming its request.
- `StreamCalls` (client): sends requests, matches each answer to its caller by that key, and
  when the call breaks fails every request in flight with `ProposalTimeoutError` (each may or
  may not have been carried out), as a unary call lost mid-request does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError

from controlplane.raft.errors import ProposalTimeoutError, TransportError, error_kind, rpc_error

log = logging.getLogger("controlplane.stream_calls")

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def answered_error(err: Exception) -> tuple[str, str]:
    """(kind, message) of an error to send back as an answer: ours by their kind (see
    raft/errors.py), anything else logged as the bug it is and answered as a Raft error
    rather than lost."""
    kind = error_kind(err)
    if kind is None:
        log.error("event=stream_request_failed error=%r", err, exc_info=err)
        kind = "raft"
    return kind, str(err)


class StreamAnswers(Generic[RequestT, ResponseT]):
    """The server end of one call: `answer(request)` makes each request's answer (errors
    included: it must not raise), at most `limit` at once; past that the next message is
    read only once one is answered, so flow control reaches the client."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        answer: Callable[[RequestT], Awaitable[ResponseT]],
        limit: int,
    ) -> None:
        self._context = context
        self._answer = answer
        self._limit = limit
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sending = asyncio.Lock()  # gRPC allows one message in flight per call

    async def serve(self, requests: AsyncIterator[RequestT], what: str) -> None:
        """Answer every request of the call. When the client closes its side, the requests
        in flight are still answered; when it cancels, they are cancelled here (the work
        they started, a proposal, is left to the driver: applied once or never). A message
        that is no `what` ends the call with INVALID_ARGUMENT, after the ones before it."""
        try:
            try:
                async for request in requests:
                    await self._start(request)
            except DecodeError as err:
                await self._drain()
                await self._context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a message on the stream is not a {what} ({err}); "
                    "the stream ends, open a new one",
                )
            await self._drain()
        finally:
            for task in self._in_flight:
                task.cancel()

    async def _start(self, request: RequestT) -> None:
        if len(self._in_flight) >= self._limit:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._send(request))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, request: RequestT) -> None:
        response = await self._answer(request)
        async with self._sending:
            try:
                await self._context.write(response)
            except Exception as err:  # the call ended meanwhile: no one to answer
                log.debug("event=stream_answer_dropped error=%r", err)

    async def _drain(self) -> None:
        while self._in_flight:
            await asyncio.wait(self._in_flight)


class StreamCalls(Generic[RequestT, ResponseT]):
    """The client end of one call (`call`: a grpc.aio stream-stream call opened without a
    request iterator, so it can `write` and `read`). `key_of(response)` names the request
    a response answers. Once broken, it stays broken: open a new call."""

    def __init__(self, call: Any, key_of: Callable[[ResponseT], Hashable], what: str) -> None:
        self._call = call
        self._key_of = key_of
        self._what = what
        self._waiting: dict[Hashable, asyncio.Future[ResponseT]] = {}
        self._sending = asyncio.Lock()
        self.broken = ""  # why the call broke; each failed request gets its own error
        self._reader = asyncio.create_task(self._read_answers())

    async def request(self, request: RequestT, key: Hashable, timeout: float) -> ResponseT:
        """Send `request` and return its answer; `key` must be unique among those in flight."""
        if self.broken:
            raise self._failure()
        if key in self._waiting:
            raise ValueError(f"a request with key {key!r} is already in flight on the stream")
        answer: asyncio.Future[ResponseT] = asyncio.get_running_loop().create_future()
        self._waiting[key] = answer
        sent = False
        try:
            async with asyncio.timeout(timeout):
                async with self._sending:
                    await self._call.write(request)
                sent = True
                return await answer
        except TimeoutError:
            if not sent:  # stuck in the middle of a message: the call cannot go on
                raise self._break(TransportError(f"the {self._what} stalled")) from None
            raise ProposalTimeoutError() from None
        except grpc.aio.AioRpcError as err:  # the request itself could not be sent
            raise self._break(rpc_error(err)) from err
        except asyncio.InvalidStateError as err:  # the call ended before the reader saw it
            raise self._break(TransportError(f"the {self._what} has ended: {err}")) from err
        finally:
            self._waiting.pop(key, None)

    async def _read_answers(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]  # not in the stubs
                    raise TransportError(f"the manager ended the {self._what}")
                answer = self._waiting.get(self._key_of(response))
                if answer is not None and not answer.done():
                    answer.set_result(response)
        except grpc.aio.AioRpcError as err:
            self._break(rpc_error(err))
        except Exception as err:
            self._break(err)

    def _break(self, cause: Exception) -> Exception:
        """Fail every request in flight: the call is gone, their outcomes unknown."""
        self.broken = self.broken or f"the {self._what} broke: {cause}"
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(self._failure())
        return self._failure()

    def _failure(self) -> ProposalTimeoutError:
        return ProposalTimeoutError(self.broken)

    async def close(self) -> None:
        """End the call; requests still in flight fail."""
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._break(TransportError(f"the {self._what} was closed"))
