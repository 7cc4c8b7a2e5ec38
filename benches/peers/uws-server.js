#!/usr/bin/env node
// uWebSockets.js server speaking Herald's path-topic protocol through uWS's native pub/sub: a
// client connects to ws://127.0.0.1:PORT/<topic>, is subscribed to the topic <path> on open, and
// every message it sends is published to that topic with app.publish (so the sender gets it too),
// binary kept binary. The fan-out loop runs in C++ (uWS TopicTree), not in JavaScript.
//
// uWebSockets.js v20 comes from the npm package `uwebsockets` 3.0.6 (a republish of the official
// GitHub release binaries; uWebSockets.js itself is not on npm). Compression off, as in the
// uWS docs' fastest configuration. Usage: node uws-server.js [PORT]   (or PORT=...; 0 picks a
// free port). First stdout line: `listening on ws://127.0.0.1:PORT`. Exits 0 on SIGTERM/SIGINT.
// With TLS_CERT and TLS_KEY (PEM files) set, it serves wss:// with uWS.SSLApp instead, and the
// line says `listening on wss://127.0.0.1:PORT` (benches/tls_handshakes.sh).
'use strict';

const uWS = require('uwebsockets');

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`uws-server: bad port ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

const tls = process.env.TLS_CERT && process.env.TLS_KEY;
const app = (
  tls
    ? uWS.SSLApp({ cert_file_name: process.env.TLS_CERT, key_file_name: process.env.TLS_KEY })
    : uWS.App()
).ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20, // Herald's default --max-message
  maxBackpressure: 1 << 20, // Herald's default --max-backlog
  closeOnBackpressureLimit: false,
  idleTimeout: 60, // seconds; uWS sends pings itself (sendPingsAutomatically)

  upgrade: (res, req, context) => {
    // req is only valid inside this callback: copy what we need into the user data.
    res.upgrade(
      { topic: req.getUrl() },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => {
    ws.subscribe(ws.getUserData().topic);
  },
  message: (ws, message, isBinary) => {
    // app.publish, not ws.publish: ws.publish skips the sender, the protocol includes it.
    app.publish(ws.getUserData().topic, message, isBinary);
  },
});

let listenSocket = null;
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws-server: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  listenSocket = token;
  console.log(`listening on ${tls ? 'wss' : 'ws'}://127.0.0.1:${uWS.us_socket_local_port(token)}`);
});

const stop = () => {
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
