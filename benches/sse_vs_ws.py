#!/usr/bin/env python3
"""Server CPU per delivery: Server-Sent Events streams against WebSocket subscribers, side by
side on one herald process (docs/benchmarks.md, "SSE against WebSocket").

Starts `herald --threads 1` pinned to one core, then alternates rounds of the same load:
SUBS subscribers of one topic (raw-path WebSocket, or SSE streams), one HTTP publisher posting
RATE text messages of SIZE bytes per second for SECONDS. For each round it reads the server's
CPU time (/proc/PID/stat, all threads) and `herald_deliveries_total` before and after, and
prints CPU microseconds per delivery. The clients run in this one process (pin it to another
core with taskset); they only read and discard, so they keep up.

usage: taskset -c 1 python3 benches/sse_vs_ws.py HERALD_BIN [SUBS RATE SECONDS SIZE ROUNDS SERVER_CORE]
"""
import os
import re
import selectors
import socket
import subprocess
import sys
import time

HERALD = sys.argv[1]
SUBS, RATE, SECONDS, SIZE, ROUNDS = (int(a) for a in (sys.argv[2:7] + ["200", "500", "8", "64", "3"][len(sys.argv[2:7]):]))
CORE = sys.argv[7] if len(sys.argv) > 7 else "0"
TICK = os.sysconf("SC_CLK_TCK")


def start():
    proc = subprocess.Popen(
        ["taskset", "-c", CORE, HERALD, "--listen", "127.0.0.1:0", "--threads", "1",
         "--stats-interval", "0", "--max-backlog", "16777216"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.match(r"listening on ws://([\d.]+):(\d+)", line)
    if not m:
        raise SystemExit(f"unexpected first line {line!r}")
    return proc, (m.group(1), int(m.group(2)))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def metric(addr, name):
    s = socket.create_connection(addr)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise SystemExit(f"{name} not in /metrics")


def subscriber(addr, kind, topic):
    s = socket.create_connection(addr)
    if kind == "ws":
        req = (f"GET /{topic} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    else:
        req = f"GET /{topic} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    s.sendall(req.encode())
    s.setblocking(False)
    return s


def round_(addr, pid, kind, n):
    topic = f"bench-{kind}-{n}"
    sel = selectors.DefaultSelector()
    subs = [subscriber(addr, kind, topic) for _ in range(SUBS)]
    for s in subs:
        sel.register(s, selectors.EVENT_READ)
    received = 0

    def pump(timeout):
        nonlocal received
        for key, _ in sel.select(timeout):
            try:
                data = key.fileobj.recv(1 << 20)
                received += len(data)
            except BlockingIOError:
                pass

    end = time.time() + 1.0  # joins and handshakes settle
    while time.time() < end:
        pump(0.05)
    pub = socket.create_connection(addr)
    body = ("x" * SIZE).encode()
    post = (f"POST /{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    pub.setblocking(False)
    sel.register(pub, selectors.EVENT_READ, data="pub")
    d0, c0 = metric(addr, "herald_deliveries_total"), cpu_seconds(pid)
    b0 = metric(addr, "herald_bytes_out_total")
    start = time.time()
    sent = 0
    while time.time() - start < SECONDS:
        due = int((time.time() - start) * RATE)
        while sent < due:
            pub.sendall(post)
            sent += 1
        pump(0.001)
    end = time.time() + 1.0
    while time.time() < end:
        pump(0.05)
    d1, c1 = metric(addr, "herald_deliveries_total"), cpu_seconds(pid)
    b1 = metric(addr, "herald_bytes_out_total")
    for s in subs + [pub]:
        sel.unregister(s)
        s.close()
    time.sleep(0.5)
    deliveries = d1 - d0
    cpu = c1 - c0
    return kind, sent, deliveries, cpu, b1 - b0


def main():
    proc, addr = start()
    print(f"herald pid {proc.pid} on core {CORE}; {SUBS} subscribers, {RATE} msg/s of {SIZE} B, "
          f"{SECONDS} s per round, {ROUNDS} rounds; load: {open('/proc/loadavg').read().strip()}")
    print(f"{'kind':4} {'sent':>7} {'deliveries':>11} {'server cpu s':>12} {'us/delivery':>11} {'bytes out':>11}")
    totals = {}
    try:
        for n in range(ROUNDS):
            for kind in ("ws", "sse"):
                k, sent, deliveries, cpu, out = round_(addr, proc.pid, kind, n)
                per = cpu / deliveries * 1e6 if deliveries else float("nan")
                print(f"{k:4} {sent:7} {deliveries:11} {cpu:12.2f} {per:11.3f} {out:11}")
                t = totals.setdefault(k, [0, 0.0])
                t[0] += deliveries
                t[1] += cpu
        ws = totals["ws"][1] / totals["ws"][0] * 1e6
        sse = totals["sse"][1] / totals["sse"][0] * 1e6
        print(f"all rounds: ws {ws:.3f} us/delivery, sse {sse:.3f} us/delivery, sse/ws {sse / ws:.2f}")
    finally:
        proc.terminate()
        proc.wait()


main()
