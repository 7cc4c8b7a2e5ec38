#!/usr/bin/env node
// A storm of TLS handshakes against one wss:// port (issue 19): N connections, K at a time,
// each a TLS handshake and nothing else (then end). Measures the handshakes per second the
// server sustains; benches/tls_handshakes.sh reads the server's CPU time around it.
//
// Usage: node tls-storm.js PORT N [--inflight K] [--save FILE] [--load FILE]
//   --save FILE  keep each connection's TLS session (its TLS 1.3 ticket) in FILE
//   --load FILE  resume with the sessions in FILE (connection i uses session i)
// Prints one JSON line: {"n","secs","per_sec","resumed"} (resumed: handshakes the server
// resumed). Exits 1 if any handshake fails or the storm takes over 120 s.
'use strict';

const tls = require('tls');
const fs = require('fs');

const args = process.argv.slice(2);
const port = Number(args[0]);
const n = Number(args[1]);
let inflight = 100;
let save = null;
let load = null;
for (let i = 2; i < args.length; i += 2) {
  if (args[i] === '--inflight') inflight = Number(args[i + 1]);
  else if (args[i] === '--save') save = args[i + 1];
  else if (args[i] === '--load') load = args[i + 1];
  else fail(`unknown argument ${args[i]}`);
}
if (!Number.isInteger(port) || !Number.isInteger(n) || n < 1) {
  fail('usage: node tls-storm.js PORT N [--inflight K] [--save FILE] [--load FILE]');
}
function fail(msg) {
  console.error(`tls-storm: ${msg}`);
  process.exit(1);
}

const sessions = load ? JSON.parse(fs.readFileSync(load, 'utf8')).map((s) => Buffer.from(s, 'base64')) : null;
const saved = new Array(n).fill(null);
let started = 0;
let done = 0;
let resumed = 0;
const t0 = process.hrtime.bigint();

function finish() {
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (save) fs.writeFileSync(save, JSON.stringify(saved.map((s) => (s ? s.toString('base64') : ''))));
  console.log(JSON.stringify({ n, secs: +secs.toFixed(3), per_sec: Math.round(n / secs), resumed }));
  process.exit(0);
}

function openOne() {
  const i = started++;
  const options = { host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false };
  if (sessions && sessions[i] && sessions[i].length) options.session = sessions[i];
  const socket = tls.connect(options);
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    socket.end();
    socket.destroy();
    done += 1;
    if (done === n) finish();
    else if (started < n) openOne();
  };
  socket.once('secureConnect', () => {
    if (socket.isSessionReused()) resumed += 1;
    // A TLS 1.3 ticket arrives after the handshake: wait for it when saving.
    if (!save) end();
    else setTimeout(end, 1000);
  });
  socket.on('session', (s) => {
    saved[i] = s;
    end();
  });
  socket.on('error', (err) => fail(`connection ${i} failed: ${err.message}`));
}

setTimeout(() => fail(`only ${done} of ${n} after 120 s`), 120_000);
for (let k = 0; k < Math.min(inflight, n); k++) openOne();
