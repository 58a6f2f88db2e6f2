"""A TCP proxy in front of the MQTT broker that a test can cut and restore, to test network
faults for real (like psycopg's ``tests/fix_proxy.py``). Load with ``-p tests.fix_mqtt_proxy``.

```python
async def test_reconnects(mqtt_proxy: MqttProxy) -> None:
    async with MqttBus(mqtt_proxy.url, client_id="gs-1", prefix=...) as bus:
        await mqtt_proxy.cut()      # every connection reset, new ones refused
        ...
        await mqtt_proxy.restore()  # listening again on the same port
```

`cut` resets (RST) both sides of every connection, so the broker sees the client vanish
without DISCONNECT and publishes its will, and stops listening, so reconnects are refused
at once. `stall` instead keeps connections open but stops moving bytes (a silent network
failure, detected only by keepalive). Several proxies (``mqtt_proxy_factory``) let a mesh
test partition groups of servers from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest


class MqttProxy:
    """An asyncio TCP proxy from ``127.0.0.1:<port>`` to the broker."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cuts = 0
        self.accepted = 0
        """Connections accepted since the proxy started (a reconnection adds one)."""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def connections(self) -> int:
        return len(self._pipes)

    async def start(self) -> None:
        if self.port == 0:
            # Pick a free port once, so restore() can listen on the same one.
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def cut(self) -> None:
        """Reset every connection (both sides) and refuse new ones until `restore`."""
        self._cuts += 1
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pipes, self._pipes = list(self._pipes), set()
        for pipe in pipes:
            pipe.abort()
        await asyncio.gather(*(t for p in pipes for t in p.tasks), return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def stall(self) -> None:
        """Stop forwarding bytes (connections stay open; new ones are accepted but get no
        answer) until `restore`."""
        self._flowing.clear()

    async def restore(self) -> None:
        """Undo `cut` / `stall`: listen and forward again."""
        self._flowing.set()
        await self._listen()

    async def stop(self) -> None:
        await self.cut()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        cuts = self._cuts
        try:
            broker_r, broker_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        if cuts != self._cuts:  # cut while we were connecting to the broker
            client_w.transport.abort()
            broker_w.transport.abort()
            return
        pipe = _Pipe(client_w, broker_w)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(client_r, broker_w, pipe)),
            asyncio.create_task(self._pump(broker_r, client_w, pipe)),
        ]

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side closed (or failed): close the other and forget the pair.
            pipe.close()
            self._pipes.discard(pipe)


class _Pipe:
    def __init__(self, a: asyncio.StreamWriter, b: asyncio.StreamWriter) -> None:
        self.writers = (a, b)
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for w in self.writers:
            w.transport.abort()
        for t in self.tasks:
            t.cancel()

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()


MqttProxyFactory = Callable[[], Awaitable[MqttProxy]]


@pytest.fixture
async def mqtt_proxy_factory(mqtt_url: str) -> AsyncIterator[MqttProxyFactory]:
    """Make any number of started proxies to the test broker; all stopped afterwards."""
    parts = urlsplit(mqtt_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    made: list[MqttProxy] = []

    async def make() -> MqttProxy:
        proxy = MqttProxy(host, port)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.stop()


@pytest.fixture
async def mqtt_proxy(mqtt_proxy_factory: MqttProxyFactory) -> MqttProxy:
    """One started proxy to the test broker; ``mqtt_proxy.url`` is what to connect to."""
    return await mqtt_proxy_factory()
