#!/usr/bin/env python3
"""Connects/s and publishes/s with backend hooks against without, side by side in one run
(docs/benchmarks.md, "Backend hooks").

Starts a hook backend (Python ThreadingHTTPServer, HTTP/1.1 keep-alive, answers
{"allow":true} at once) and two herald processes with the same flags, `--threads 1`, pinned
to SERVER_CORE: one without hooks, one with --connect-hook and --publish-hook. Then, in
alternating rounds, CLIENTS client threads (this process) do for SECONDS each:
- connects: WebSocket upgrade, read the 101, close; repeat;
- publishes: HTTP POST /t (16 B text) on a kept-alive connection, read the 202; repeat.
Prints the rates of each round and the ratio hooks/plain of their totals.

usage: taskset -c 1 python3 benches/hooks_cost.py HERALD_BIN [CLIENTS SECONDS ROUNDS SERVER_CORE]
"""
import http.server
import re
import socket
import subprocess
import sys
import threading
import time

HERALD = sys.argv[1]
CLIENTS, SECONDS, ROUNDS = (int(a) for a in (sys.argv[2:5] + ["8", "3", "2"][len(sys.argv[2:5]):]))
CORE = sys.argv[5] if len(sys.argv) > 5 else "0"


class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"allow":true}'
        # One write: head and body in one segment (no Nagle / delayed-ACK stall).
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def log_message(self, *args):
        pass


def start(extra):
    proc = subprocess.Popen(
        ["taskset", "-c", CORE, HERALD, "--listen", "127.0.0.1:0", "--threads", "1",
         "--stats-interval", "0"] + extra,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    m = re.match(r"listening on ws://([\d.]+):(\d+)", proc.stdout.readline())
    if not m:
        raise SystemExit("herald did not start")
    return proc, (m.group(1), int(m.group(2)))


UPGRADE = (b"GET /t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
POST = (b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
        + b"x" * 16)


def read_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise IOError("closed")
        data += chunk
    return data


def connects(addr, stop, counts, i):
    while time.time() < stop:
        s = socket.create_connection(addr)
        s.sendall(UPGRADE)
        if read_head(s).startswith(b"HTTP/1.1 101"):
            counts[i] += 1
        s.close()


def publishes(addr, stop, counts, i):
    s = socket.create_connection(addr)
    while time.time() < stop:
        s.sendall(POST)
        head = read_head(s)
        if head.startswith(b"HTTP/1.1 202"):
            counts[i] += 1
        # the 202 body ({"seq":…}) is short: it came with the head or comes next
        if not head.rstrip(b"\r\n").endswith(b"}"):
            s.recv(4096)
    s.close()


def rate(addr, work):
    counts = [0] * CLIENTS
    stop = time.time() + SECONDS
    threads = [threading.Thread(target=work, args=(addr, stop, counts, i)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / SECONDS


def main():
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{backend.server_port}/hook"
    plain, plain_addr = start([])
    hooked, hooked_addr = start(["--connect-hook", url, "--publish-hook", url])
    print(f"{CLIENTS} client threads, {SECONDS} s per measurement, {ROUNDS} rounds; "
          f"load: {open('/proc/loadavg').read().strip()}")
    totals = {}
    try:
        for r in range(ROUNDS):
            for what, work in (("connects/s", connects), ("publishes/s", publishes)):
                for name, addr in (("plain", plain_addr), ("hooks", hooked_addr)):
                    v = rate(addr, work)
                    totals[(what, name)] = totals.get((what, name), 0) + v
                    print(f"round {r}: {what:12} {name:6} {v:9.0f}")
        for what in ("connects/s", "publishes/s"):
            p, h = totals[(what, "plain")] / ROUNDS, totals[(what, "hooks")] / ROUNDS
            print(f"mean {what:12} plain {p:9.0f}  hooks {h:9.0f}  hooks/plain {h / p:.2f}")
    finally:
        for p in (plain, hooked):
            p.terminate()
            p.wait()
        backend.shutdown()


main()
