"""A slow HTTP server on 127.0.0.1 for the I/O lane's tests and benchmarks: it answers
``GET /wait?s=SECONDS&id=TOKEN`` after SECONDS, and counts what it saw.

``/wait?s=30&then=0.1&id=T`` waits 30 s the first time it sees token T and 0.1 s after
(a call that is slow on its first attempt only). ``&g=NAME`` counts the calls in flight
(and their peak) of group NAME apart from the others; ``&g=NAME&n=N`` starts the wait
only once N calls of the group are in flight (at most 5 minutes later), so that N calls
of SECONDS each are in flight at once whatever the rate at which they arrive.

It runs on its own event loop in a thread of the calling process, so hundreds of calls
can wait at once, and stops with ``close()``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit


class SlowServer:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()  # requests per token
        self.done: Counter[str] = Counter()  # answers sent in full, per token
        self.dropped: Counter[str] = Counter()  # calls whose client went away first
        self.in_flight = 0
        self.peak = 0
        self.group_in_flight: Counter[str] = Counter()
        self.group_peak: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="slow-http", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                line = await reader.readline()
                if not line:
                    return
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers
                if not await self._answer(line, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _answer(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request after its wait; False when the client went away first."""
        query = parse_qs(urlsplit(line.split()[1].decode()).query)
        token = query.get("id", [""])[0]
        first = self.seen[token] == 0
        self.seen[token] += 1
        wait = float(query.get("s", ["0"])[0])
        if not first and "then" in query:
            wait = float(query["then"][0])
        group = query.get("g", [""])[0]
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.group_in_flight[group] += 1
        self.group_peak[group] = max(self.group_peak[group], self.group_in_flight[group])
        try:
            # A client that goes away (a cancelled call) closes its end: see it at once.
            gone = asyncio.ensure_future(reader.read(1))
            together = int(query.get("n", ["0"])[0])
            deadline = asyncio.get_running_loop().time() + 300
            while self.group_in_flight[group] < together and not gone.done():
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            done, _ = await asyncio.wait({gone}, timeout=wait)
            if done:
                self.dropped[token] += 1
                return False
            # Done with the watch before answering: the client sends nothing more until
            # it has the answer, so no byte of its next request can be lost to it.
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
            body = f"waited {wait:g}".encode()
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            self.done[token] += 1
            return True
        finally:
            self.in_flight -= 1
            self.group_in_flight[group] -= 1

    def reset(self) -> None:
        self.seen.clear()
        self.done.clear()
        self.dropped.clear()
        self.peak = self.in_flight

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)
