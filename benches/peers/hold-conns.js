#!/usr/bin/env node
// Opens N idle WebSocket connections to URL and holds them, for measuring a server's idle memory
// per connection (benches/compare.sh row d). The loadtest has no "hold idle connections" mode.
//
// Usage: node hold-conns.js URL N [--inflight K] [--hold S] [--open-timeout S]
//   (URL: ws:// or wss://, loopback; --open-timeout: how long opening may take, default 60 s)
// Prints `open N` on stdout once all N are open (after that the caller samples the server's RSS),
// then holds them, answering pings, until SIGTERM/SIGINT or --hold seconds (default 120) pass.
// Exits 1 (with the reason on stderr) if any connection fails or opening takes too long.
'use strict';

const WebSocket = require('ws');

const args = process.argv.slice(2);
const url = args[0];
const n = Number(args[1]);
let inflight = 500;
let holdSecs = 120;
let openSecs = 60;
for (let i = 2; i < args.length; i += 2) {
  if (args[i] === '--inflight') inflight = Number(args[i + 1]);
  else if (args[i] === '--hold') holdSecs = Number(args[i + 1]);
  else if (args[i] === '--open-timeout') openSecs = Number(args[i + 1]);
  else fail(`unknown argument ${args[i]}`);
}
if (!url || !/^wss?:\/\/127\.0\.0\.1:\d+\//.test(url) || !Number.isInteger(n) || n < 1) {
  fail('usage: node hold-conns.js ws[s]://127.0.0.1:PORT/TOPIC N [--inflight K] [--hold S]');
}

function fail(msg) {
  console.error(`hold-conns: ${msg}`);
  process.exit(1);
}

const conns = [];
let started = 0;
let opened = 0;

function openOne() {
  started += 1;
  // wss:// is for local measurements against a self-signed certificate.
  const ws = new WebSocket(url, { perMessageDeflate: false, rejectUnauthorized: false });
  conns.push(ws);
  ws.once('open', () => {
    opened += 1;
    if (opened === n) {
      clearTimeout(openTimer);
      console.log(`open ${n}`);
      setTimeout(() => process.exit(0), holdSecs * 1000);
    } else if (started < n) {
      openOne();
    }
  });
  ws.on('error', (err) => fail(`connection ${conns.length} failed: ${err.message}`));
  ws.on('close', (code) => fail(`server closed a connection (code ${code})`));
}

const openTimer = setTimeout(() => fail(`only ${opened} of ${n} open after ${openSecs} s`), openSecs * 1000);
for (let i = 0; i < Math.min(inflight, n); i++) openOne();

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
