// herald-client against a scripted herald.v1 peer (a `ws` server in this process), for what a
// real herald does only under overload or failure: a seq that jumps while connected (messages
// dropped on full worker queues), close codes 1003/1008/1012, the backoff schedule, and a
// pattern's per-topic bookkeeping (duplicates, jumps, the bounded since map).
// The peer answers exactly as docs/protocol.md specifies.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocketServer } from "ws";

import { client, freePort, range, record, stopAll, waitFor } from "./helpers.js";

after(stopAll);

/** A herald.v1 peer; `onConn(ws, req)` scripts each connection. */
async function peer(onConn, port = 0) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols: (p) => (p.has("herald.v1") ? "herald.v1" : false) });
  await new Promise((r) => wss.once("listening", r));
  wss.conns = 0;
  wss.requests = [];
  wss.on("connection", (ws, req) => {
    wss.conns++;
    ws.on("message", (d) => wss.requests.push(JSON.parse(String(d))));
    onConn(ws, req, wss.conns);
  });
  wss.url = `ws://127.0.0.1:${wss.address().port}/`;
  wss.stop = () => new Promise((r) => {
    for (const c of wss.clients) c.terminate();
    wss.close(r);
  });
  return wss;
}

/** Answers every subscribe with `subscribed` at `seq`, epoch "e1". */
function answerSubscribes(ws, seq = 0) {
  ws.on("message", (d) => {
    const m = JSON.parse(String(d));
    if (m.op === "subscribe") {
      for (const t of m.topics) {
        const topic = typeof t === "string" ? t : t.topic;
        ws.send(JSON.stringify({ type: "subscribed", id: m.id, topic, epoch: "e1", seq, replayed: 0 }));
      }
    }
  });
}

test("a seq that jumps while connected is reported through onGap, then delivery goes on", async (t) => {
  const wss = await peer((ws) => {
    answerSubscribes(ws, 0);
    ws.on("message", (d) => {
      if (JSON.parse(String(d)).op !== "subscribe") return;
      for (const seq of [1, 2, 5, 6]) ws.send(JSON.stringify({ type: "message", topic: "j", seq, data: String(seq) }));
      // A duplicate (never sent by herald; the client must not deliver it twice).
      ws.send(JSON.stringify({ type: "message", topic: "j", seq: 6, data: "6" }));
    });
  });
  t.after(() => wss.stop());
  const h = client(wss.url);
  t.after(() => h.close());
  const rec = record(h, "j");
  await waitFor(() => rec.got.length === 4, "four messages");
  assert.deepEqual(rec.got, ["1", "2", "5", "6"]);
  assert.deepEqual(rec.gaps, [{ reason: "seq_jump", topic: "j", epoch: "e1", lastSeq: 2, nextSeq: 5 }]);
  await new Promise((r) => setImmediate(r));
  assert.equal(rec.got.length, 4, "the duplicate is not delivered");
});

test("close 1003 and a 1008 other than token expiry are terminal: an error event with the code, no reconnect", async (t) => {
  for (const [code, reason] of [
    [1003, "herald.v1 takes JSON text messages"],
    [1008, "rate limit"],
  ]) {
    const wss = await peer((ws) => ws.close(code, reason));
    const h = client(wss.url);
    await waitFor(() => h.state === "closed", `closed after ${code}`);
    const err = h.events.find((e) => e.e === "error");
    assert.ok(err, `an error event for ${code}`);
    assert.equal(err.err.code, code);
    assert.equal(err.err.reason, reason);
    assert.ok(!h.events.some((e) => e.e === "reconnecting"), "no reconnect");
    await assert.rejects(h.publish("x", "y"), (e) => e.code === "closed");
    assert.equal(wss.conns, 1);
    await wss.stop();
  }
});

test("1012 and 1001 reconnect at once (jitter below minDelay), and recovery resubscribes with since", async (t) => {
  // Connection n delivers message n (after n - 1 already delivered), then closes: 1012, 1001.
  const wss = await peer((ws, req, n) => {
    answerSubscribes(ws, n - 1);
    ws.on("message", (d) => {
      if (JSON.parse(String(d)).op !== "subscribe") return;
      ws.send(JSON.stringify({ type: "message", topic: "r", seq: n, data: String(n) }));
      if (n <= 2) setTimeout(() => ws.close(n === 1 ? 1012 : 1001, "restart"), 20);
    });
  });
  t.after(() => wss.stop());
  // A large minDelay: a backoff reconnect could take up to 60 s, "at once" stays below 1 s.
  const h = client(wss.url, { minDelay: 1000, maxDelay: 60000 });
  t.after(() => h.close());
  const rec = record(h, "r");
  await waitFor(() => rec.got.length === 3, "three messages over three connections", 5000);
  assert.deepEqual(rec.got, range(3));
  const rcs = h.events.filter((e) => e.e === "reconnecting");
  assert.deepEqual(rcs.map((e) => e.code), [1012, 1001]);
  for (const rc of rcs) assert.ok(rc.delay < 1000, `jitter below minDelay: ${rc.delay}`);
  const subs = wss.requests.filter((m) => m.op === "subscribe");
  assert.deepEqual(
    subs.map((m) => m.topics[0]),
    ["r", { topic: "r", since: { epoch: "e1", seq: 1 } }, { topic: "r", since: { epoch: "e1", seq: 2 } }],
  );
  assert.deepEqual(rec.gaps, []);
});

test("backoff: full jitter under a cap that grows by factor up to maxDelay, reset after a stable connection", async (t) => {
  const port = await freePort();
  // Nothing listens: every attempt fails.
  const h = client(`ws://127.0.0.1:${port}/`, { minDelay: 10, maxDelay: 80, factor: 2, stableAfter: 100 });
  t.after(() => h.close());
  await waitFor(() => h.events.filter((e) => e.e === "reconnecting").length >= 7, "seven failed attempts");
  const delays = h.events.filter((e) => e.e === "reconnecting").slice(0, 7);
  delays.forEach((e, i) => {
    assert.equal(e.attempt, i + 1);
    const cap = Math.min(80, 10 * 2 ** i);
    assert.ok(e.delay >= 0 && e.delay <= cap, `attempt ${i + 1}: delay ${e.delay} within [0, ${cap}]`);
  });
  // Now a server that stays up: after stableAfter the count starts over.
  const wss = await peer((ws) => answerSubscribes(ws), port);
  t.after(() => wss.stop());
  await waitFor(() => h.state === "open", "open");
  await waitFor(() => h._attempt === 0, "the attempt count reset after stableAfter");
  const before = h.events.length;
  for (const c of wss.clients) c.terminate();
  await waitFor(() => h.events.slice(before).some((e) => e.e === "reconnecting"), "reconnecting");
  const next = h.events.slice(before).find((e) => e.e === "reconnecting");
  assert.equal(next.attempt, 1, "attempts counted from zero again");
  assert.ok(next.delay <= 10);
});

test("close() is final: no reconnect, timers cancelled, queued publishes rejected", async () => {
  const port = await freePort();
  const h = client(`ws://127.0.0.1:${port}/`, { minDelay: 5000, maxDelay: 5000 });
  const p = h.publish("x", "queued");
  const d = h.drained();
  await waitFor(() => h.events.some((e) => e.e === "reconnecting"), "a failed attempt");
  h.close();
  await assert.rejects(p, (e) => e.code === "closed");
  await assert.rejects(d, (e) => e.code === "closed");
  assert.equal(h.state, "closed");
  assert.equal(h._timers.size, 0, "no timer left");
  assert.throws(() => h.subscribe("x", () => {}), (e) => e.code === "closed");
});

test("an unsolicited epoch_changed (a cluster node ending a stream it cannot fill): onGap, then resubscribed live", async (t) => {
  const wss = await peer((ws) => {
    let subscribes = 0;
    ws.on("message", (d) => {
      const m = JSON.parse(String(d));
      if (m.op !== "subscribe") return;
      subscribes++;
      if (subscribes === 1) {
        ws.send(JSON.stringify({ type: "subscribed", id: m.id, topic: "c", epoch: "e1", seq: 7, replayed: 0 }));
        ws.send(JSON.stringify({ type: "message", topic: "c", seq: 8, data: "8" }));
        ws.send(JSON.stringify({ type: "error", id: null, topic: "c", code: "epoch_changed", reason: "redis lost the topic" }));
      } else {
        ws.send(JSON.stringify({ type: "subscribed", id: m.id, topic: "c", epoch: "e2", seq: 0, replayed: 0 }));
        ws.send(JSON.stringify({ type: "message", topic: "c", seq: 1, data: "new-1" }));
      }
    });
  });
  t.after(() => wss.stop());
  const h = client(wss.url);
  t.after(() => h.close());
  const rec = record(h, "c");
  await waitFor(() => rec.got.length === 2, "a message before and after the gap");
  assert.deepEqual(rec.got, ["8", "new-1"]);
  assert.deepEqual(rec.gaps, [{ reason: "epoch_changed", topic: "c", epoch: "e1", lastSeq: 8 }]);
  const subs = wss.requests.filter((m) => m.op === "subscribe").map((m) => m.topics[0]);
  assert.deepEqual(subs, ["c", "c"], "the resubscribe after a gap is live, without since");
  assert.equal(rec.meta.epoch, "e2");
  assert.equal(wss.conns, 1, "same connection");
});

test("a subscribe refused as unavailable (cluster broker down) is asked again after retryUnavailable", async (t) => {
  const wss = await peer((ws) => {
    let subscribes = 0;
    ws.on("message", (d) => {
      const m = JSON.parse(String(d));
      if (m.op !== "subscribe") return;
      subscribes++;
      if (subscribes <= 2) {
        ws.send(JSON.stringify({ type: "error", id: m.id, topic: "u", code: "unavailable", reason: "broker down" }));
      } else {
        ws.send(JSON.stringify({ type: "subscribed", id: m.id, topic: "u", epoch: "e1", seq: 3, replayed: 0 }));
        ws.send(JSON.stringify({ type: "message", topic: "u", seq: 4, data: "4" }));
      }
    });
  });
  t.after(() => wss.stop());
  const h = client(wss.url, { retryUnavailable: 30 });
  t.after(() => h.close());
  const rec = record(h, "u");
  await waitFor(() => rec.got.length === 1, "the message after two refusals");
  assert.deepEqual(rec.got, ["4"]);
  assert.deepEqual([rec.errors, rec.gaps], [[], []]);
  assert.equal(wss.requests.filter((m) => m.op === "subscribe").length, 3);
});

test("a pattern: duplicates dropped and seq jumps reported per topic; the since map keeps the maxPatternTopics most recent topics, a forgotten one is reported untracked", async (t) => {
  const send = (ws, ...msgs) => msgs.forEach((m) => ws.send(JSON.stringify(m)));
  const sub = (id, topic, seq, replayed = 0) => ({ type: "subscribed", id, topic, pattern: "x/*", epoch: "e1", seq, replayed });
  const msg = (topic, seq) => ({ type: "message", topic, seq, data: `${topic}:${seq}` });
  const wss = await peer((ws, req, n) => {
    ws.on("message", (d) => {
      const m = JSON.parse(String(d));
      if (m.op !== "subscribe") return;
      if (n === 1) {
        // A topic may be announced before the pattern's own `subscribed`.
        send(ws, sub(m.id, "x/1", 0), { type: "subscribed", id: m.id, pattern: "x/*" }, msg("x/1", 1));
        send(ws, sub(m.id, "x/2", 10), msg("x/2", 11));
        send(ws, sub(m.id, "x/3", 0), msg("x/3", 1), msg("x/3", 2), msg("x/3", 2), msg("x/3", 5));
        send(ws, msg("x/1", 2));
        setTimeout(() => ws.close(1012, "restart"), 20);
      } else {
        send(ws, { type: "subscribed", id: m.id, pattern: "x/*" });
        send(ws, sub(m.id, "x/1", 3, 1), msg("x/1", 2), msg("x/1", 3));
        send(ws, sub(m.id, "x/3", 5), sub(m.id, "x/2", 12), msg("x/2", 13), msg("x/3", 6));
      }
    });
  });
  t.after(() => wss.stop());
  const h = client(wss.url, { maxPatternTopics: 2 });
  t.after(() => h.close());
  const got = [];
  const gaps = [];
  h.subscribe("x/*", { onMessage: (d) => got.push(d), onGap: (g) => gaps.push(g) });
  await waitFor(() => got.length === 9, "nine messages over two connections");
  assert.deepEqual(got, ["x/1:1", "x/2:11", "x/3:1", "x/3:2", "x/3:5", "x/1:2", "x/1:3", "x/2:13", "x/3:6"]);
  assert.deepEqual(gaps, [
    { reason: "seq_jump", topic: "x/3", epoch: "e1", lastSeq: 2, nextSeq: 5 },
    { reason: "untracked", topic: "x/2", epoch: null, lastSeq: 0, nextSeq: 13 },
  ]);
  const subs = wss.requests.filter((m) => m.op === "subscribe").map((m) => m.topics[0]);
  assert.deepEqual(subs, [
    "x/*",
    { topic: "x/*", since: { "x/1": { epoch: "e1", seq: 2 }, "x/3": { epoch: "e1", seq: 5 } } },
  ]);
});
