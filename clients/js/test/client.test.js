// herald-client against a real single-node herald: topics, publish, the outgoing queue, and
// a server killed with SIGKILL and restarted.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { client, freePort, post, range, record, startHerald, stopAll, waitFor, withTimeout } from "./helpers.js";

after(stopAll);

test("one connection, two topics: text and bytes arrive with topic, seq and epoch; publish resolves the seq", async (t) => {
  const server = await startHerald(["--history", "100"]);
  const h = client(server.url);
  t.after(() => h.close());
  const subscribed = [];
  const a = record(h, "a");
  await waitFor(() => a.subscribed.length === 1, "subscribed to a");
  const b = { got: [], metas: [] };
  h.subscribe("b", {
    onMessage: (d, meta) => {
      b.got.push(d);
      b.metas.push(meta);
    },
    onSubscribed: (info) => subscribed.push(info),
  });
  await waitFor(() => subscribed.length === 1, "subscribed to b");
  assert.equal(await h.publish("a", "a1"), 1);
  assert.equal(await h.publish("b", "b1"), 1);
  const bytes = new Uint8Array([0, 1, 2, 0xff, 0xfe]);
  assert.equal(await h.publish("b", bytes), 2);
  assert.equal(await h.publish("b", bytes.buffer), 3);
  await waitFor(() => a.got.length === 1 && b.got.length === 3, "the four messages");
  assert.deepEqual(a.got, ["a1"]);
  assert.equal(b.got[0], "b1");
  assert.ok(b.got[1] instanceof Uint8Array, "data_b64 arrives as bytes");
  assert.deepEqual([...b.got[1]], [...bytes]);
  assert.deepEqual([...b.got[2]], [...bytes]);
  assert.deepEqual(
    b.metas.map((m) => [m.topic, m.seq]),
    [
      ["b", 1],
      ["b", 2],
      ["b", 3],
    ],
  );
  assert.equal(typeof b.metas[0].epoch, "string");
  assert.equal(b.metas[0].epoch, subscribed[0].epoch);
  assert.equal(h.state, "open");
  assert.equal(h.bufferedAmount, 0);
});

test("publish is rejected with the server's error code; a refused subscribe ends with onError", async (t) => {
  const server = await startHerald();
  const h = client(server.url);
  t.after(() => h.close());
  await assert.rejects(h.publish("bad topic", "x"), (e) => e.name === "HeraldError" && e.code === "bad_topic");
  const bad = record(h, "no spaces allowed");
  await waitFor(() => bad.errors.length === 1, "the subscribe refusal");
  assert.equal(bad.errors[0].code, "bad_topic");
  assert.equal(bad.sub.active, false);
  // The connection goes on.
  const ok = record(h, "fine");
  await waitFor(() => ok.subscribed.length === 1, "subscribed");
  await withTimeout(h.publish("fine", "x"), 5000, "publish after a refusal");
  await waitFor(() => ok.got.length === 1, "the message after the refusal");
});

test("unsubscribe stops delivery at once", async (t) => {
  const server = await startHerald();
  const h = client(server.url);
  t.after(() => h.close());
  let live = 0;
  const got = [];
  const sub = h.subscribe("u", { onMessage: (d) => got.push(d), onSubscribed: () => live++ });
  await waitFor(() => live === 1, "subscribed");
  await h.publish("u", "1");
  await waitFor(() => got.length === 1, "first message");
  sub.unsubscribe();
  sub.unsubscribe(); // twice is harmless
  await h.publish("u", "2"); // no subscriber left: numbered only while subscribed, so null
  const again = record(h, "u");
  await waitFor(() => again.subscribed.length === 1, "subscribed again");
  await h.publish("u", "3");
  await waitFor(() => again.got.length === 1, "the new subscription's message");
  assert.deepEqual(got, ["1"]);
  assert.deepEqual(again.got, ["3"]);
});

test("publishes while disconnected wait in a bounded queue, over it reject at once, and flush in order", async (t) => {
  const port = await freePort();
  // Nothing listens yet: the client keeps retrying.
  const h = client(`ws://127.0.0.1:${port}/`, { queueSize: 3, minDelay: 20, maxDelay: 100 });
  t.after(() => h.close());
  const rec = record(h, "q");
  const queued = [h.publish("q", "1"), h.publish("q", "2"), h.publish("q", "3")];
  await assert.rejects(h.publish("q", "4"), (e) => e.code === "queue_full");
  assert.ok(h.bufferedAmount > 0, "queued publishes count in bufferedAmount");
  await waitFor(() => h.events.some((e) => e.e === "reconnecting"), "a failed attempt");
  await startHerald(["--history", "100"], port);
  const seqs = await withTimeout(Promise.all(queued), 10000, "the queued publishes");
  assert.deepEqual(seqs, [1, 2, 3]);
  // The subscribe went out before the queue, so the subscriber saw all three, in order.
  await waitFor(() => rec.got.length === 3, "three messages");
  assert.deepEqual(rec.got, range(3));
  assert.equal(h.bufferedAmount, 0);
});

test("a server killed with SIGKILL and restarted: reconnect, onGap with epoch_changed and the last seq, then live", async (t) => {
  const port = await freePort();
  let server = await startHerald(["--history", "100"], port);
  const h = client(server.url);
  t.after(() => h.close());
  const rec = record(h, "k");
  await waitFor(() => rec.subscribed.length === 1, "subscribed");
  for (let i = 1; i <= 5; i++) assert.equal(await h.publish("k", String(i)), i);
  await waitFor(() => rec.got.length === 5, "five messages");
  const firstEpoch = rec.meta.epoch;

  await server.stop("SIGKILL");
  await waitFor(() => h.events.some((e) => e.e === "reconnecting"), "reconnecting after the kill");
  server = await startHerald(["--history", "100"], port);

  await waitFor(() => rec.gaps.length === 1, "onGap after the restart");
  assert.deepEqual(
    { reason: rec.gaps[0].reason, lastSeq: rec.gaps[0].lastSeq, epoch: rec.gaps[0].epoch },
    { reason: "epoch_changed", lastSeq: 5, epoch: firstEpoch },
  );
  // Live again on the new epoch.
  await waitFor(() => h.state === "open" && rec.sub.epoch !== firstEpoch, "resubscribed on the new epoch");
  assert.equal(await h.publish("k", "new-1"), 1);
  await waitFor(() => rec.got.length === 6, "the first message of the new epoch");
  assert.equal(rec.got[5], "new-1");
  assert.equal(rec.meta.seq, 1);
  assert.notEqual(rec.meta.epoch, firstEpoch);
  assert.equal(rec.gaps.length, 1, "one gap report");
  const rc = h.events.find((e) => e.e === "reconnecting");
  assert.equal(rc.code, 1006);
  assert.ok(rc.attempt >= 1 && rc.delay >= 0 && rc.delay <= 50, `full jitter within minDelay: ${JSON.stringify(rc)}`);
});

test("reconnect with since after a dropped connection: every message exactly once, in order", async (t) => {
  // One server, history on; the client's socket is cut (not the server), many times, while
  // messages are published over HTTP.
  const server = await startHerald(["--history", "10000"]);
  const h = client(server.url, { minDelay: 10, maxDelay: 50 });
  t.after(() => h.close());
  const rec = record(h, "cut");
  await waitFor(() => rec.subscribed.length === 1, "subscribed");
  const N = 600;
  let cuts = 0;
  for (let i = 1; i <= N; i++) {
    const r = await post(server.http, "cut", String(i));
    assert.equal(r.status, 202, r.body);
    if (i % 100 === 50) {
      // Cut a live subscription each time: wait for the resubscribe after the previous cut.
      await waitFor(() => rec.subscribed.length === cuts + 1, `subscription ${cuts + 1}`);
      h._ws.terminate(); // `ws`: drop the TCP connection without a close frame
      cuts++;
    }
  }
  await waitFor(() => rec.got.length >= N, `${N} messages (got ${rec.got.length})`, 20000);
  assert.equal(cuts, 6);
  assert.deepEqual(rec.got, range(N));
  assert.deepEqual(rec.gaps, []);
  assert.ok(h.events.filter((e) => e.e === "reconnecting").length >= 6, "it reconnected after every cut");
  assert.ok(rec.subscribed.slice(1).some((s) => s.replayed > 0), "some messages came back through since");
});

test("backpressure: over highWaterMark publishes wait in the queue (counted in bufferedAmount), drained() resolves, order kept", async (t) => {
  const server = await startHerald(["--history", "1000", "--max-message", "262144"]);
  const h = client(server.url, { highWaterMark: 64 * 1024, queueSize: 500 });
  t.after(() => h.close());
  const rec = record(h, "bp");
  await waitFor(() => rec.subscribed.length === 1, "subscribed");
  const big = "x".repeat(100 * 1024);
  const seqs = [];
  for (let i = 0; i < 200; i++) seqs.push(h.publish("bp", `${i + 1}:${big}`));
  assert.ok(h.bufferedAmount > 64 * 1024, `bufferedAmount counts what waits: ${h.bufferedAmount}`);
  await withTimeout(h.drained(), 20000, "drained()");
  assert.equal(h.bufferedAmount, 0);
  assert.deepEqual(await Promise.all(seqs), range(200).map(Number));
  await waitFor(() => rec.got.length === 200, "200 messages", 20000);
  assert.deepEqual(
    rec.got.map((d) => d.split(":")[0]),
    range(200),
  );
});

test("first subscribe with rewind, or with a since position the application stored", async (t) => {
  const server = await startHerald(["--history", "100"]);
  for (let i = 1; i <= 5; i++) assert.equal((await post(server.http, "hist", String(i))).status, 202);
  const h = client(server.url);
  t.after(() => h.close());
  const rewound = record(h, "hist", { rewind: 2 });
  await waitFor(() => rewound.got.length === 2, "the last two kept messages");
  assert.deepEqual(rewound.got, ["4", "5"]);
  assert.deepEqual(rewound.seqs, [4, 5]);
  const epoch = rewound.sub.epoch;
  rewound.sub.unsubscribe();

  // A position the application stored itself (say in localStorage): continue after seq 3.
  const got = [];
  h.subscribe("hist", (d) => got.push(d), { since: { epoch, seq: 3 } });
  await waitFor(() => got.length === 2, "4 and 5 replayed");
  await h.publish("hist", "6");
  await waitFor(() => got.length === 3, "6 live");
  assert.deepEqual(got, ["4", "5", "6"]);
  assert.throws(() => h.subscribe("hist", () => {}), (e) => e.code === "already_subscribed");
});
