"""The bench scripts' WebSocket client side, standard library only: an upgrade over a plain
socket and masked text frames (RFC 6455), so each script states only its own load."""

import base64
import os
import socket
import struct

KEY = base64.b64encode(b"herald-benchmark").decode()


def upgrade(port, path, extra=""):
    """Connect to 127.0.0.1:PORT, upgrade PATH (with EXTRA header lines); returns the socket
    and whatever arrived after the 101's head."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"upgrade of {path}: connection closed")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"upgrade of {path}: {head[:60]!r}")
    return s, head.split(b"\r\n\r\n", 1)[1]


def text_frame(payload):
    """One masked text frame (a client's) carrying PAYLOAD (bytes)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
