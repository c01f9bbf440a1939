#!/usr/bin/env python3
"""A TCP proxy on loopback that makes a local server look distant.

    delay_proxy.py --upstream 127.0.0.1:9000 [--listen 127.0.0.1:0] [--delay-ms 15]
                   [--rate-mbit 200] [--max-seconds 3600]

Every chunk read from either side is queued with a due time (arrival + the one-way delay) and
sent when due, in order, so a request and its reply each take `delay` and a round trip takes
twice that; throughput is not limited by the delay (chunks in flight overlap), as on a real
long link. `--rate-mbit` caps each direction's bandwidth, shared by all connections (a link,
not a per-connection limit): a chunk leaves when the link is free, its size / rate later.

tc netem is not available on these machines, hence this. Prints `listening on HOST:PORT` on
stdout once it accepts connections (port 0 picks a free one), and exits after `--max-seconds`
so a forgotten proxy does not live forever. Standard library only.
"""

import argparse
import asyncio
import collections
import sys
import time

CHUNK = 64 * 1024
# Bytes a direction may hold queued before it stops reading (TCP's window pushes back then).
QUEUE_LIMIT = 8 << 20


class Link:
    """One direction's bandwidth, shared by every connection."""

    def __init__(self, rate_bytes_per_s):
        self.rate = rate_bytes_per_s
        self.free_at = 0.0

    def departure(self, due, size):
        """When a chunk of `size` bytes, due at `due`, has finished crossing the link."""
        if not self.rate:
            return due
        start = max(due, self.free_at)
        self.free_at = start + size / self.rate
        return self.free_at


async def pump(reader, writer, delay, link):
    """Copies reader to writer, each chunk `delay` seconds late (plus the link's queueing)."""
    queue = collections.deque()
    ready = asyncio.Event()
    drained = asyncio.Event()
    queued = [0]
    loop = asyncio.get_running_loop()

    async def receive():
        try:
            while True:
                while queued[0] > QUEUE_LIMIT:
                    drained.clear()
                    await drained.wait()
                data = await reader.read(CHUNK)
                now = loop.time()
                queue.append((link.departure(now + delay, len(data)) if data else now + delay, data))
                queued[0] += len(data)
                ready.set()
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.append((loop.time(), None))
            ready.set()

    async def send():
        while True:
            while not queue:
                ready.clear()
                await ready.wait()
            due, data = queue.popleft()
            if data:
                queued[0] -= len(data)
                drained.set()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:  # the other side broke: break this one too
                writer.transport.abort()
                return
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    receiving = asyncio.ensure_future(receive())
    try:
        await send()
    except (ConnectionError, OSError):
        pass
    finally:
        receiving.cancel()


async def handle(client_reader, client_writer, args, up_link, down_link):
    host, port = args.upstream.rsplit(":", 1)
    try:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
    except OSError:
        client_writer.transport.abort()
        return
    delay = args.delay_ms / 1000.0
    await asyncio.gather(
        pump(client_reader, server_writer, delay, up_link),
        pump(server_reader, client_writer, delay, down_link),
        return_exceptions=True,
    )
    for w in (client_writer, server_writer):
        w.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept on (default 127.0.0.1:0)")
    parser.add_argument("--delay-ms", type=float, default=15.0, help="one-way delay per direction")
    parser.add_argument("--rate-mbit", type=float, default=0.0, help="bandwidth cap per direction (0: none)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args()
    rate = args.rate_mbit * 1e6 / 8
    up_link, down_link = Link(rate), Link(rate)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, up_link, down_link), host, int(port), reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), timeout=args.max_seconds)
        except asyncio.TimeoutError:
            print(f"delay_proxy: exiting after {args.max_seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
