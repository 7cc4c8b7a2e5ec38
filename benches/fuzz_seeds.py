#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus (fuzz/corpus/TARGET/NAME): a few valid inputs of each
kind, so the fuzzer starts from the paths real clients take. Deterministic (fixed masks), so
re-running it changes nothing. Standard library only.

  python3 benches/fuzz_seeds.py [fuzz/corpus]
"""

import os
import ssl
import struct
import sys
import zlib

MASK = b"\x37\xfa\x21\x3d"


def frame(opcode, payload, fin=True, rsv1=False):
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return bytes(head) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def deflated(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
UPGRADE_DEFLATE = UPGRADE[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
UPGRADE_V1 = UPGRADE.replace(b"/chat", b"/")[:-2] + b"Sec-WebSocket-Protocol: herald.v1\r\n\r\n"
PUBLISH = b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

# The first byte of a frame input is also where frames() splits it into two reads.
FRAMES = {
    "text": frame(1, b"hello"),
    "binary_126": frame(2, bytes(range(200))),
    "fragments": frame(1, b"hel", fin=False) + frame(0, b"lo"),
    "ping_then_text": frame(9, b"p") + frame(1, "héllo".encode()),
    "close": frame(8, struct.pack(">H", 1000) + b"bye"),
    "interleaved_ping": frame(2, b"ab", fin=False) + frame(9, b"") + frame(0, b"cd"),
}
DEFLATE = {
    "compressed": frame(1, deflated(b"hello hello hello hello"), rsv1=True),
    "compressed_fragments": (
        lambda d: frame(1, d[:5], fin=False, rsv1=True) + frame(0, d[5:])
    )(deflated(b'{"price": 101.5, "symbol": "BTC"}' * 4)),
    "compressed_binary": frame(2, deflated(bytes(300)), rsv1=True),
    "plain_text": frame(1, b"plain"),
}
HTTP = {
    "upgrade": UPGRADE,
    "upgrade_deflate": UPGRADE_DEFLATE,
    "upgrade_v1": UPGRADE_V1,
    "publish": PUBLISH,
    "health": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "metrics": b"GET /metrics HTTP/1.1\r\n\r\n",
    "bearer": UPGRADE[:-2] + b"Authorization: Bearer abc.def.ghi\r\nOrigin: https://a.example\r\n\r\n",
}
V1 = {
    "subscribe": b'{"op":"subscribe","id":1,"topics":["chat",{"topic":"prices/BTC","rewind":1}]}',
    "since": b'{"op":"subscribe","id":2,"topics":[{"topic":"orders","since":{"epoch":"5f3a9c1e.0.7","seq":1041}}]}',
    "unsubscribe": b'{"op":"unsubscribe","id":3,"topics":["chat"]}',
    "publish": b'{"op":"publish","id":4,"topic":"chat","data":"hello"}',
    "publish_b64": b'{"op":"publish","id":5,"topic":"chat","data_b64":"AAH/"}',
}


def client_hello():
    """A real TLS ClientHello for localhost (from Python's ssl module, in memory)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"
    sets = {
        "frame": FRAMES,
        "frame_deflate": {**DEFLATE, **FRAMES},
        "http_head": HTTP,
        "v1_request": V1,
        # First byte: even = raw TLS records; odd = plaintext after a real handshake
        # (bit 1: permessage-deflate for the frames after the upgrade).
        "tls_websocket": {
            "client_hello": b"\x00" + client_hello(),
            "upgrade_frames": b"\x01" + UPGRADE + FRAMES["fragments"] + FRAMES["close"],
            "upgrade_deflate": b"\x03" + UPGRADE_DEFLATE + DEFLATE["compressed"],
            "publish": b"\x01" + PUBLISH,
        },
    }
    for target, seeds in sets.items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    print(f"wrote {sum(len(s) for s in sets.values())} seeds under {root}")


if __name__ == "__main__":
    main()
