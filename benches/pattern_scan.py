#!/usr/bin/env python3
"""What a pattern subscribe costs in cluster mode when Redis already holds many topics
(issue 14): the listener SCANs Redis once per distinct pattern and follows each matching
topic (one SUBSCRIBE and one position read each) before it answers.

Starts its own redis-server (a free port) and one herald node (--broker) on core 0, fills
Redis with TOTAL topics `k/<i>` that no pattern here matches plus MATCHING topics `m/<i>`
(their `seq` keys, as a publish leaves them), then, from core 1, subscribes `m/*` with
herald.v1 and times (a) until the pattern's own `subscribed` and (b) until every matching
topic's `subscribed` has arrived. Then subscribes `k/none/*` (matches nothing) to time a
scan alone. Bounded: one subscribe each, 300 s deadline. Standard library only.
Prints one JSON line: {"keys", "matching", "pattern_s", "all_topics_s", "scan_only_s"}.

  pattern_scan.py HERALD_BINARY TOTAL MATCHING
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from wsclient import text_frame, upgrade

DEADLINE_S = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames(s, buf):
    """Yields (payload) of each server text frame, reading as needed."""
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                break
            opcode, payload, buf = buf[0] & 0x0F, buf[at : at + n], buf[at + n :]
            if opcode == 1:
                yield payload
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk


def subscribe(port, pattern, matching, keep=None):
    s, rest = upgrade(port, "/", "Sec-WebSocket-Protocol: herald.v1\r\n")
    s.settimeout(DEADLINE_S)
    start = time.monotonic()
    s.sendall(text_frame(json.dumps({"op": "subscribe", "id": 1, "topics": [pattern]}).encode()))
    pattern_s, topics = None, 0
    for payload in frames(s, rest):
        v = json.loads(payload)
        if v.get("type") == "error":
            raise SystemExit(f"refused: {v}")
        if v.get("type") != "subscribed":
            continue
        if "topic" in v:
            topics += 1
        elif pattern_s is None:
            pattern_s = time.monotonic() - start
        if pattern_s is not None and topics >= matching:
            if keep is None:
                s.close()
            else:
                keep.append(s)
            return pattern_s, time.monotonic() - start


def main():
    binary, total, matching = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    work = tempfile.mkdtemp(prefix="pattern-scan-")
    rport = free_port()
    redis = subprocess.Popen(
        ["taskset", "-c", "1", "redis-server", "--port", str(rport), "--save", "", "--appendonly", "no",
         "--dir", work],
        stdout=subprocess.DEVNULL,
    )
    herald = None
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(rport), "ping"], capture_output=True).stdout.strip() == b"PONG":
                break
            time.sleep(0.1)
        fill = "for i=1,ARGV[1] do redis.call('SET','herald:{'..ARGV[2]..'/'..i..'}:seq',0) end"
        for prefix, n in (("k", total), ("m", matching)):
            if n:
                subprocess.run(["redis-cli", "-p", str(rport), "eval", fill, "0", str(n), prefix],
                               check=True, capture_output=True)
        log = open(os.path.join(work, "herald.log"), "w+")
        herald = subprocess.Popen(
            ["taskset", "-c", "0", binary, "--listen", "127.0.0.1:0", "--threads", "1", "--cores", "0",
             "--stats-interval", "0", "--max-topics-per-conn", str(matching + 10),
             "--broker", f"redis://127.0.0.1:{rport}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        port = None
        for _ in range(100):
            log.seek(0)
            text = log.read()
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", text)
            if m and "broker: up" in text:
                port = int(m.group(1))
                break
            time.sleep(0.1)
        if port is None:
            raise SystemExit("herald did not start")
        kept = []
        pattern_s, all_s = subscribe(port, "m/*", matching, kept)
        second_s, second_all_s = subscribe(port, "m/*", matching)
        kept[0].close()
        scan_s, _ = subscribe(port, "k/none/*", 0)
        print(json.dumps({"keys": total + matching, "matching": matching,
                          "pattern_s": round(pattern_s, 3), "all_topics_s": round(all_s, 3),
                          "second_s": round(second_s, 3), "second_all_topics_s": round(second_all_s, 3),
                          "scan_only_s": round(scan_s, 3)}))
    finally:
        if herald:
            herald.kill()
            herald.wait()
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    main()
