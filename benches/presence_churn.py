#!/usr/bin/env python3
"""Subscribe churn against a loopback Herald, for benches/presence_churn.sh: N raw path
clients, one after another, each connects to /TOPIC (the upgrade subscribes it), waits for
its 101 and hangs up (the server unsubscribes it). Beside them a herald.v1 "watcher"
subscribes to TOPIC, with "presence":true when --events is given, and is drained as it goes,
so with presence on every churn costs a join and a leave event delivered to it.

Bounded: N connections, and a 120 s deadline. Standard library only. Prints one JSON line:
{"churns", "seconds", "churns_per_s", "watcher_bytes", "joins"}.

  presence_churn.py PORT N TOPIC [--events]
"""

import json
import sys
import time

from wsclient import text_frame, upgrade



def main():
    port, n, topic = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    events = "--events" in sys.argv[4:]
    watcher, seen = upgrade(port, "/", "Sec-WebSocket-Protocol: herald.v1\r\n")
    wanted = {"topic": topic, "presence": True} if events else topic
    request = {"op": "subscribe", "id": 1, "topics": [wanted]}
    watcher.sendall(text_frame(json.dumps(request).encode()))
    while b"subscribed" not in seen:
        seen += watcher.recv(65536)
    watcher.setblocking(False)
    received, joins, tail = 0, 0, b""
    deadline = time.monotonic() + 120
    start = time.monotonic()
    done = 0
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        s, _ = upgrade(port, f"/{topic}")
        s.close()
        done += 1
        try:
            while True:
                chunk = watcher.recv(1 << 20)
                if not chunk:
                    raise SystemExit("the watcher was closed")
                received += len(chunk)
                joins += (tail + chunk).count(b'"type":"join"')
                tail = chunk[-16:]
        except BlockingIOError:
            pass
    seconds = time.monotonic() - start
    print(
        json.dumps(
            {
                "churns": done,
                "seconds": round(seconds, 3),
                "churns_per_s": round(done / seconds),
                "watcher_bytes": received,
                "joins": joins,
            }
        )
    )


if __name__ == "__main__":
    main()
