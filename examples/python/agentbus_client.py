"""A small asyncio client for the agentbus gateway's WebSocket protocol (docs/protocol.md).

Standard library plus the ``websockets`` package (Debian: ``python3-websockets``; 10.x or later,
the asyncio API). Example::

    async with AgentBusClient("ws://127.0.0.1:8080/v1/ws", token=None) as bus:
        async def on_task(msg):
            print(msg.data)          # returning acks; raising nacks
        await bus.subscribe("tasks.>", on_task, durable="worker")
        await bus.publish("tasks.new", {"n": 1})
        answer = await bus.request("quotes.get", {"sku": "a"}, timeout_ms=5000)
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Awaitable, Callable, Dict, Optional

import websockets


class AgentBusError(Exception):
    """An ``error`` frame from the gateway: ``code`` is stable (``FORBIDDEN``, ``TIMEOUT`` ...)."""

    def __init__(self, code: str, message: str, retryable: bool = False, data: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.data = data


class Message:
    """One delivery: the CloudEvents ``envelope``, its ``attempt``, and how to settle it."""

    def __init__(self, client: "AgentBusClient", frame: Dict[str, Any]):
        self._client = client
        self.sub: str = frame["sub"]
        self.delivery: str = frame["delivery"]
        self.attempt: int = frame["attempt"]
        self.envelope: Dict[str, Any] = frame["envelope"]
        self.settled = False

    @property
    def data(self) -> Any:
        return self.envelope.get("data")

    @property
    def topic(self) -> str:
        return self.envelope["topic"]

    @property
    def is_request(self) -> bool:
        return "replyto" in self.envelope

    async def ack(self) -> None:
        await self._settle({"op": "ack", "delivery": self.delivery})

    async def nack(self, delay_ms: int = 0, error: Optional[str] = None) -> None:
        frame: Dict[str, Any] = {"op": "nack", "delivery": self.delivery, "delayMs": delay_ms}
        if error:
            frame["error"] = error[:1024]
        await self._settle(frame)

    async def dead_letter(self, reason: str = "rejected-by-client") -> None:
        await self._settle({"op": "deadLetter", "delivery": self.delivery, "reason": reason})

    async def reply(self, data: Any = None, error: Optional[Dict[str, Any]] = None) -> None:
        """Answers a request (``error``: ``{"code": ..., "message": ...}``) and acks it."""
        frame: Dict[str, Any] = {"op": "reply", "delivery": self.delivery}
        if error is not None:
            frame["error"] = error
        else:
            frame["data"] = data
        await self._settle(frame)

    async def _settle(self, frame: Dict[str, Any]) -> None:
        if self.settled:
            return
        self.settled = True
        await self._client._send(frame)


Handler = Callable[[Message], Awaitable[Any]]


class AgentBusClient:
    """One WebSocket connection to the gateway; every call waits for its answer frame."""

    def __init__(self, url: str, token: Optional[str] = None, max_size: int = 4 * 1024 * 1024):
        self._url = url
        self._token = token
        self._max_size = max_size
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._waiting: Dict[str, asyncio.Future] = {}
        self._handlers: Dict[str, Handler] = {}
        self._early: Dict[str, list] = {}
        self._reader: Optional[asyncio.Task] = None
        self._tasks: set = set()

    async def __aenter__(self) -> "AgentBusClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:  # websockets 10-13 (legacy asyncio API)
            self._ws = await websockets.connect(self._url, extra_headers=headers, max_size=self._max_size)
        except TypeError:  # websockets >= 14 renamed the option
            self._ws = await websockets.connect(self._url, additional_headers=headers, max_size=self._max_size)
        self._reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        durable: Optional[str] = None,
        group: Optional[str] = None,
        prefetch: Optional[int] = None,
    ) -> str:
        """Subscribes ``handler``: returning acks the message, raising nacks it."""
        frame: Dict[str, Any] = {"op": "subscribe", "topic": topic}
        if durable:
            frame["durable"] = durable
        if group:
            frame["group"] = group
        if prefetch:
            frame["prefetch"] = prefetch
        answer = await self._call(frame)
        sub = answer["sub"]
        self._handlers[sub] = handler
        for early in self._early.pop(sub, []):
            self._dispatch(early)
        return sub

    async def unsubscribe(self, sub: str) -> None:
        await self._call({"op": "unsubscribe", "sub": sub})
        self._handlers.pop(sub, None)

    async def publish(self, topic: str, data: Any, **fields: Any) -> str:
        """Publishes once durable; returns the message id. ``fields``: type, priority, headers ..."""
        answer = await self._call({"op": "publish", "topic": topic, "data": data, **fields})
        return answer["msgId"]

    async def request(self, topic: str, data: Any, timeout_ms: Optional[int] = None) -> Any:
        frame: Dict[str, Any] = {"op": "request", "topic": topic, "data": data}
        if timeout_ms:
            frame["timeoutMs"] = timeout_ms
        return (await self._call(frame))["data"]

    async def ping(self) -> None:
        await self._call({"op": "ping"})

    async def _send(self, frame: Dict[str, Any]) -> None:
        await self._ws.send(json.dumps(frame))

    async def _call(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        call_id = f"py{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        try:
            await self._send({**frame, "id": call_id})
            return await future
        finally:
            self._waiting.pop(call_id, None)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                frame = json.loads(raw)
                if frame.get("op") == "message":
                    self._dispatch(frame)
                    continue
                future = self._waiting.get(frame.get("id", ""))
                if future is None or future.done():
                    continue
                if frame.get("op") == "error":
                    future.set_exception(
                        AgentBusError(frame["code"], frame["message"], frame.get("retryable", False), frame.get("data"))
                    )
                else:
                    future.set_result(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(AgentBusError("CLOSED", "the connection closed", True))

    def _dispatch(self, frame: Dict[str, Any]) -> None:
        handler = self._handlers.get(frame["sub"])
        if handler is None:  # a delivery raced ahead of our own bookkeeping of `subscribed`
            self._early.setdefault(frame["sub"], []).append(frame)
            return
        task = asyncio.ensure_future(self._run(handler, Message(self, frame)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler, msg: Message) -> None:
        try:
            await handler(msg)
        except Exception as err:  # the handler failed: the gateway redelivers later
            await msg.nack(delay_ms=1000, error=f"{type(err).__name__}: {err}")
            return
        await msg.ack()
