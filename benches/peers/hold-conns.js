#!/usr/bin/env node
// Opens N idle WebSocket connections to URL and holds them, for measuring a server's idle memory
// per connection (benches/compare.sh row d). The loadtest has no "hold idle connections" mode.
//
// Usage: node hold-conns.js URL N [--inflight K] [--hold S] [--open-timeout S] [--v1 | --sse]
//   (URL: ws:// or wss://, loopback; --open-timeout: how long opening may take, default 60 s;
//   --v1: open each as `herald.v1` on `/` and subscribe to URL's path as a topic; a connection
//   counts as open once its `subscribed` reply has come; --sse: an SSE stream of URL's path,
//   `GET` with `Accept: text/event-stream` on ws:// URLs only, open once its `200` head has come)
// Prints `open N` on stdout once all N are open (after that the caller samples the server's RSS),
// then holds them, answering pings, until SIGTERM/SIGINT or --hold seconds (default 120) pass.
// Exits 1 (with the reason on stderr) if any connection fails or opening takes too long.
'use strict';

const http = require('http');
const WebSocket = require('ws');

const args = process.argv.slice(2);
const url = args[0];
const n = Number(args[1]);
let inflight = 500;
let holdSecs = 120;
let openSecs = 60;
let v1 = false;
let sse = false;
for (let i = 2; i < args.length; i += 2) {
  if (args[i] === '--v1' || args[i] === '--sse') {
    v1 ||= args[i] === '--v1';
    sse ||= args[i] === '--sse';
    i -= 1; // a flag without a value
  } else if (args[i] === '--inflight') inflight = Number(args[i + 1]);
  else if (args[i] === '--hold') holdSecs = Number(args[i + 1]);
  else if (args[i] === '--open-timeout') openSecs = Number(args[i + 1]);
  else fail(`unknown argument ${args[i]}`);
}
if (!url || !/^wss?:\/\/127\.0\.0\.1:\d+\//.test(url) || !Number.isInteger(n) || n < 1) {
  fail('usage: node hold-conns.js ws[s]://127.0.0.1:PORT/TOPIC N [--inflight K] [--hold S]');
}

if (sse && !url.startsWith('ws://')) fail('--sse takes a ws:// URL (plain HTTP)');
if (sse && v1) fail('--v1 and --sse: one or the other');

function fail(msg) {
  console.error(`hold-conns: ${msg}`);
  process.exit(1);
}

const conns = [];
let started = 0;
let opened = 0;

const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

// One SSE stream: open once its 200 head has come; the events are read and dropped.
function openSse() {
  const target = new URL(url);
  const req = http.get(
    { host: target.hostname, port: target.port, path: target.pathname, agent,
      headers: { Accept: 'text/event-stream' } },
    (res) => {
      if (res.statusCode !== 200) fail(`SSE stream refused: ${res.statusCode}`);
      res.on('data', () => {});
      res.on('end', () => fail('server ended an SSE stream'));
      opened1();
    },
  );
  req.on('error', (err) => fail(`stream ${started} failed: ${err.message}`));
}

function opened1() {
  opened += 1;
  if (opened === n) {
    clearTimeout(openTimer);
    console.log(`open ${n}`);
    setTimeout(() => process.exit(0), holdSecs * 1000);
  } else if (started < n) {
    openOne();
  }
}

function openOne() {
  started += 1;
  if (sse) return openSse();
  // wss:// is for local measurements against a self-signed certificate.
  const options = { perMessageDeflate: false, rejectUnauthorized: false };
  const ws = v1
    ? new WebSocket(new URL('/', url).href, 'herald.v1', options)
    : new WebSocket(url, options);
  conns.push(ws);
  if (v1) {
    const topic = new URL(url).pathname.slice(1);
    ws.once('open', () => ws.send(JSON.stringify({ op: 'subscribe', id: 1, topics: [topic] })));
    ws.on('message', (data) => {
      const reply = JSON.parse(data.toString());
      if (reply.type === 'subscribed') opened1();
      else if (reply.type === 'error') fail(`subscribe refused: ${data}`);
    });
  } else {
    ws.once('open', opened1);
  }
  ws.on('error', (err) => fail(`connection ${conns.length} failed: ${err.message}`));
  ws.on('close', (code) => fail(`server closed a connection (code ${code})`));
}

const openTimer = setTimeout(() => fail(`only ${opened} of ${n} open after ${openSecs} s`), openSecs * 1000);
for (let i = 0; i < Math.min(inflight, n); i++) openOne();

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
