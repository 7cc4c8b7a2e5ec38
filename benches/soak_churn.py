#!/usr/bin/env python3
"""Connection churn for benches/soak.sh: clients that come and go beside the loadtest's
steady subscribers, for a fixed time, against a loopback Herald only.

Every 1/--rate seconds a client starts, cycling through four kinds:
  reader     raw path subscriber to --topic; reads 0.5-3 s, then closes (a close frame, or
             half the time just TCP).
  stalled    raw path subscriber with a 4 KiB receive buffer that never reads, held 5 s
             (a phone in a tunnel): Herald must close it as a slow consumer or drop it cleanly.
  recover    herald.v1 client on --v1-topic, one of --identities identities; it resubscribes
             with `since` from where its last session ended and checks the stream is exact:
             `subscribed` says seq - replayed == last seen, then seq goes up by exactly 1.
  (publishers) an HTTP keep-alive publisher posts to --v1-topic and --topic at --publish-rate,
             and every --burst-every seconds --burst messages go to --topic as fast as Herald
             answers.

Standard library only. Writes a JSON report (--report) and exits 0 when every resubscribe was
exact; 1 otherwise.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import struct
import sys
import time

KEY = base64.b64encode(b"soak-churn-key!!").decode()


def mask_frame(opcode, payload):
    """A masked client frame, FIN set."""
    mask = os.urandom(4)
    head = bytearray([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += struct.pack(">H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + masked


async def read_frame(reader):
    """(opcode, payload) of the next server frame (server frames are unmasked)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(n)


async def upgrade(host, port, path, protocol=None, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


class Churn:
    def __init__(self, a):
        self.a = a
        self.counts = {k: 0 for k in ("reader", "stalled", "recover")}
        self.failed = {k: 0 for k in ("reader", "stalled", "recover")}
        self.received = 0
        self.resubscribes = 0
        self.exact = 0
        self.errors = []
        self.refusals = {}
        self.published = 0
        self.burst_messages = 0
        self.publish_failures = 0
        self.refused_publishes = {}
        self.sequence = 0
        # identity -> (epoch, last seq) or None; the queue hands each to one session at a time.
        self.free = asyncio.Queue()
        for i in range(a.identities):
            self.free.put_nowait((i, None))

    def error(self, text):
        if len(self.errors) < 50:
            self.errors.append(text)

    async def reader(self):
        r, w = await upgrade(self.a.host, self.a.port, "/" + self.a.topic)
        end = time.monotonic() + random.uniform(0.5, 3.0)
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    op, _ = await asyncio.wait_for(read_frame(r), left)
                except asyncio.TimeoutError:
                    break
                if op in (1, 2):
                    self.received += 1
                elif op == 8:
                    return
            if random.random() < 0.5:
                w.write(mask_frame(8, struct.pack(">H", 1000)))
                await w.drain()
        finally:
            w.close()

    async def stalled(self):
        # A bare socket: asyncio's streams would read ahead into their own buffer (up to
        # their limit) even if we never called read, which is not what a stalled peer does.
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, (self.a.host, self.a.port))
            await loop.sock_sendall(
                sock,
                (
                    f"GET /{self.a.topic} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Key: {KEY}\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)
                if not chunk:
                    raise ConnectionError("closed during the upgrade")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head[:30])
            await asyncio.sleep(5.0)  # and never read again
        finally:
            sock.close()

    async def recover(self):
        # Each identity is in one session at a time; a client that finds none free waits.
        ident, since = await self.free.get()
        try:
            since = await self.recover_session(ident, since)
        finally:
            self.free.put_nowait((ident, since))

    async def recover_session(self, ident, since):
        self.counts["recover"] += 1
        r, w = await upgrade(self.a.host, self.a.port, "/", protocol="herald.v1")
        entry = {"topic": self.a.v1_topic}
        if since:
            entry["since"] = {"epoch": since[0], "seq": since[1]}
        w.write(mask_frame(1, json.dumps({"op": "subscribe", "id": 1, "topics": [entry]}).encode()))
        await w.drain()
        end = time.monotonic() + random.uniform(0.5, 3.0)
        epoch, last = (since or (None, None))
        try:
            while time.monotonic() < end:
                try:
                    op, payload = await asyncio.wait_for(read_frame(r), end - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if op == 8:
                    self.error(f"identity {ident}: closed by the server {payload[:2].hex()}")
                    return None
                if op != 1:
                    continue
                m = json.loads(payload)
                if m.get("type") == "subscribed":
                    if since:
                        self.resubscribes += 1
                        if m["epoch"] != since[0] or m["seq"] - m["replayed"] != since[1]:
                            self.error(f"identity {ident}: since {since} answered {m}")
                            return None
                    epoch, last = m["epoch"], m["seq"] - m["replayed"]
                elif m.get("type") == "error":
                    code = m.get("code")
                    self.refusals[code] = self.refusals.get(code, 0) + 1
                    return None  # history_gap etc.: start this identity afresh
                elif m.get("type") == "message":
                    if last is None or m["seq"] != last + 1:
                        self.error(f"identity {ident}: after {last} got seq {m['seq']}")
                        return None
                    last = m["seq"]
            if since and last is not None:
                self.exact += 1
            return (epoch, last) if last is not None else None
        finally:
            w.close()

    async def run_client(self, kind):
        if kind != "recover":  # a recover session is counted once it has its identity
            self.counts[kind] += 1
        try:
            await getattr(self, kind)()
        except (OSError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            # A stalled client reset by Herald, a reader cut at shutdown: counted, not fatal.
            self.failed[kind] += 1

    async def publisher(self, stop):
        """HTTP keep-alive publishes to both topics at --publish-rate; bursts to --topic.
        A refused publish (503 when Herald is overloaded: the owner's number did not come in
        time) closes the connection: count it and reconnect."""
        while not stop.is_set():
            try:
                await self.publish_loop(stop)
            except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
                self.publish_failures += 1
                await asyncio.sleep(0.1)

    async def publish_loop(self, stop):
        r, w = await asyncio.open_connection(self.a.host, self.a.port)
        body = b"x" * 200
        next_burst = time.monotonic() + self.a.burst_every
        period = 1.0 / self.a.publish_rate
        n = 0
        def request(topic, data):
            return (
                f"POST /{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode() + data
            )

        async def response():
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await r.readexactly(length)
            if not head.startswith(b"HTTP/1.1 202"):
                self.refused_publishes[head[9:12].decode(errors="replace")] = (
                    self.refused_publishes.get(head[9:12].decode(errors="replace"), 0) + 1)
                raise ConnectionError("publish refused")

        async def post(topic, data):
            w.write(request(topic, data))
            await response()
        start = time.monotonic()
        while not stop.is_set():
            n += 1
            self.sequence += 1
            await post(self.a.v1_topic, b"%d" % self.sequence)
            await post(self.a.topic, body)
            self.published += 2
            if time.monotonic() >= next_burst:
                # Pipelined, 100 requests in flight: as fast as Herald numbers them.
                one = request(self.a.topic, b"b" * 1024)
                for start_at in range(0, self.a.burst, 100):
                    batch = min(100, self.a.burst - start_at)
                    w.write(one * batch)
                    for _ in range(batch):
                        await response()
                self.burst_messages += self.a.burst
                next_burst += self.a.burst_every
                start, n = time.monotonic(), 0  # steady pacing restarts after the burst
            delay = start + n * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        w.close()

    async def main(self):
        stop = asyncio.Event()
        pub = asyncio.create_task(self.publisher(stop))
        # One in twelve never reads: ~17/s at --rate 200, about 85 held at a time.
        kinds = ["reader"] * 7 + ["stalled"] + ["recover"] * 4
        tasks = set()
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < self.a.duration:
            i += 1
            t = asyncio.create_task(self.run_client(kinds[i % len(kinds)]))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            delay = start + i / self.a.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        stop.set()
        try:
            await asyncio.wait_for(pub, 30)
        except asyncio.TimeoutError:
            self.error("publisher did not stop within 30 s")
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        return {
            "duration_s": self.a.duration,
            "wall_s": round(time.monotonic() - start, 1),
            "clients": self.counts,
            "client_failures": self.failed,
            "reader_messages": self.received,
            "resubscribes_with_since": self.resubscribes,
            "exact_resubscribes": self.exact,
            "refusals": self.refusals,
            "http_published": self.published,
            "publish_connection_failures": self.publish_failures,
            "refused_publishes_by_status": self.refused_publishes,
            "burst_messages": self.burst_messages,
            "errors": self.errors,
        }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--rate", type=float, default=200, help="new clients per second")
    p.add_argument("--topic", default="churn")
    p.add_argument("--v1-topic", default="recover")
    p.add_argument("--identities", type=int, default=60)
    p.add_argument("--publish-rate", type=float, default=50, help="HTTP publishes per second per topic")
    p.add_argument("--burst-every", type=float, default=60)
    p.add_argument("--burst", type=int, default=2000, help="messages of 1 KiB per burst")
    p.add_argument("--report", required=True)
    a = p.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("soak_churn.py targets loopback only")
    if not (0 < a.duration <= 86400 and 0 < a.rate <= 2000 and a.burst <= 100000):
        sys.exit("--duration 0..86400, --rate 0..2000, --burst at most 100000")
    report = asyncio.run(Churn(a).main())
    with open(a.report, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report))
    # Exact means: every session that resubscribed with `since` saw no gap and no duplicate.
    sys.exit(0 if not report["errors"] else 1)


if __name__ == "__main__":
    main()
