"""A TCP proxy that delays every byte by a fixed one-way time in each direction.

The kernel here has no ``netem`` qdisc, so the latency benchmark puts this
proxy between the nodes (and optionally the producer) and Redis. Each
direction of each connection is a queue of ``(release_time, bytes)``: the
reader stamps every chunk with ``now + one_way`` as it arrives and never waits
for the writer, and the writer sends chunks in order, each no earlier than its
release time. So pipelined commands stay pipelined (ten commands sent at once
arrive together, one one-way delay later), the order is kept, and a request and
its reply cost one round trip, ``2 x one_way``, on top of Redis' own time.

When either side closes, whatever was already read is still delivered (after
its delay) and then both connections are closed.

The proxy runs an asyncio loop in a daemon thread, so synchronous code (the
benchmark, tests) can start it, read its port and change its delay between
runs: ``with DelayProxy("127.0.0.1", 6380, rtt=0.02) as proxy: proxy.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

#: bytes read at a time from either side
CHUNK = 65_536
#: the longest round trip the proxy accepts, in seconds
MAX_RTT = 10.0


class DelayProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``host:port`` with delay."""

    def __init__(self, host: str, port: int, rtt: float = 0.0) -> None:
        self.target = (host, port)
        self.rtt = rtt
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def rtt(self) -> float:
        """The round trip added, in seconds (each direction holds half of it)."""
        return self._rtt

    @rtt.setter
    def rtt(self, seconds: float) -> None:
        if not 0.0 <= seconds <= MAX_RTT:
            raise ValueError(f"rtt must be between 0 and {MAX_RTT} seconds, got {seconds!r}")
        self._rtt = seconds  # read by each chunk as it arrives: applies from the next one

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # each pipe then reads its end and finishes
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=MAX_RTT)
            for task in late:
                task.cancel()

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(down_w)
        try:
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the target is down: the client sees its connection closed
            self._writers.add(up_w)
            try:
                await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w))
            finally:
                self._writers.discard(up_w)
                await _shut(up_w)
        finally:
            self._writers.discard(down_w)
            await _shut(down_w)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: read without waiting, release each chunk on time, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while chunk := await reader.read(CHUNK):
                    queue.put_nowait((loop.time() + self._rtt / 2, chunk))
            except OSError:
                pass  # a reset counts as a close
            queue.put_nowait((loop.time() + self._rtt / 2, b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                release, chunk = await queue.get()
                delay = release - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass  # the other side went away
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        # One side is done: close both ends so the other side sees it too.
        writer.close()
        reader.feed_eof()


async def _shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()
