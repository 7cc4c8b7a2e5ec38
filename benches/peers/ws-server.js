#!/usr/bin/env node
// Node.js `ws` broadcast server speaking Herald's path-topic protocol: a client connects to
// ws://127.0.0.1:PORT/<topic>; every text or binary message sent on a topic goes to every client
// connected to that topic, the sender included, with its opcode kept.
//
// Written the way the ws README shows broadcasting (`client.send(data, { binary: isBinary })`),
// with permessage-deflate off and the optional native `bufferutil` installed, as ws recommends
// for speed. Usage: node ws-server.js [PORT]   (or PORT=...; 0 picks a free port).
// First stdout line: `listening on ws://127.0.0.1:PORT`. Exits 0 on SIGTERM/SIGINT.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ws-server: bad port ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

/** topic (request path) -> Set of open clients */
const topics = new Map();

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 4096, // same listen backlog as Herald
  perMessageDeflate: false,
  clientTracking: false, // the topic map tracks clients
  maxPayload: 1 << 20, // Herald's default --max-message
});

wss.on('connection', (ws, req) => {
  const topic = req.url;
  let subs = topics.get(topic);
  if (subs === undefined) {
    subs = new Set();
    topics.set(topic, subs);
  }
  subs.add(ws);

  ws.on('message', (data, isBinary) => {
    for (const client of subs) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
  ws.on('close', () => {
    subs.delete(ws);
    if (subs.size === 0 && topics.get(topic) === subs) topics.delete(topic);
  });
  ws.on('error', () => {}); // a reset client closes; nothing to log per connection
});

wss.on('listening', () => {
  console.log(`listening on ws://127.0.0.1:${wss.address().port}`);
});
wss.on('error', (err) => {
  console.error(`ws-server: ${err.message}`);
  process.exit(1);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
