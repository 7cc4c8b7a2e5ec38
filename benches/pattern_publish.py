#!/usr/bin/env python3
"""Publish cost with many pattern subscriptions registered, for benches/pattern_publish.sh
(issue 14). Opens ceil(P/1000) herald.v1 "holder" connections that subscribe P patterns
`bench/<c>/<i>/*` in all (none matches the published topics, so any cost they add is the
index's, not deliveries), one raw subscriber of /hot, then publishes N messages with
herald.v1 `publish` in windows of 500 (each window's acks awaited):
  known  every message to `hot` (a topic that exists: the owner's cached interest list)
  fresh  every message to a new topic `fresh/<k>` (unknown to the owner: one pattern-index
         walk decides whether a pattern wants it)
The server's CPU (utime+stime of PID, /proc) is read around the publishing phase only.
Bounded: N messages and a 300 s deadline. Standard library only. Prints one JSON line:
{"patterns", "mode", "published", "seconds", "per_s", "server_us_per_publish"}.

  pattern_publish.py PORT PID PATTERNS N MODE
"""

import json
import os
import sys
import time

from wsclient import text_frame, upgrade



def v1(port):
    return upgrade(port, "/", "Sec-WebSocket-Protocol: herald.v1\r\n")


def wait_for(s, buf, needle, count, deadline):
    """Reads until `needle` was seen `count` times; returns the rest of the buffer."""
    seen = buf.count(needle)
    while seen < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {count} x {needle!r} (saw {seen})")
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed")
        seen += (buf[-32:] + chunk).count(needle) - buf[-32:].count(needle)
        buf = (buf + chunk)[-64:]
    return buf


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    patterns, n, mode = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    hz = os.sysconf("SC_CLK_TCK")

    def server_cpu():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / hz

    deadline = time.monotonic() + 300
    holders = []
    c = 0
    while c * 1000 < patterns:
        s, buf = v1(port)
        count = min(1000, patterns - c * 1000)
        topics = [f"bench/{c}/{i}/*" for i in range(count)]
        s.sendall(text_frame(json.dumps({"op": "subscribe", "id": 1, "topics": topics}).encode()))
        wait_for(s, buf, b'"subscribed"', count, deadline)
        holders.append(s)
        c += 1
    hot, _ = upgrade(port, "/hot")
    hot.setblocking(False)
    pub, buf = v1(port)
    start = time.monotonic()
    cpu0 = server_cpu()
    sent = 0
    while sent < n and time.monotonic() < deadline:
        window = min(500, n - sent)
        batch = b"".join(
            text_frame(
                json.dumps(
                    {
                        "op": "publish",
                        "id": sent + i,
                        "topic": "hot" if mode == "known" else f"fresh/{sent + i}",
                        "data": "x" * 32,
                    }
                ).encode()
            )
            for i in range(window)
        )
        pub.sendall(batch)
        buf = wait_for(pub, buf, b'"published"', window, deadline)
        sent += window
        try:
            while hot.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
    seconds = time.monotonic() - start
    cpu = server_cpu() - cpu0
    print(
        json.dumps(
            {
                "patterns": patterns,
                "mode": mode,
                "published": sent,
                "seconds": round(seconds, 3),
                "per_s": round(sent / seconds),
                "server_us_per_publish": round(cpu * 1e6 / sent, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
