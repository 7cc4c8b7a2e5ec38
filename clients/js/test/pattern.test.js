// herald-client's pattern subscriptions (`p/*`, `p/**`) against a real single-node herald:
// delivery across topics (also ones created later), per-topic recovery across cut connections
// and a held-off client, per-topic gaps after a restart, per-topic refusals, unsubscribe.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { client, freePort, post, range, startHerald, stopAll, waitFor } from "./helpers.js";

after(stopAll);

/** Subscribes `pattern` and records, per concrete topic, everything the handlers get. */
function recordPattern(h, pattern, opts) {
  const rec = { got: {}, seqs: {}, gaps: [], errors: [], subscribed: [] };
  rec.sub = h.subscribe(
    pattern,
    {
      onMessage: (data, meta) => {
        (rec.got[meta.topic] ||= []).push(data);
        (rec.seqs[meta.topic] ||= []).push(meta.seq);
        assert.equal(typeof meta.epoch, "string");
      },
      onGap: (g) => rec.gaps.push(g),
      onError: (e) => rec.errors.push(e),
      onSubscribed: (info) => rec.subscribed.push(info),
    },
    opts,
  );
  rec.count = (topic) => (rec.got[topic] || []).length;
  return rec;
}

async function publishAll(server, topic, values) {
  for (const v of values) {
    const r = await post(server.http, topic, v);
    assert.equal(r.status, 202, r.body);
  }
}

test("a pattern gets every matching topic, existing or created later, with the concrete topic; overlaps throw; unsubscribe ends it", async (t) => {
  const server = await startHerald(["--history", "100"]);
  await publishAll(server, "p/a", ["a1", "a2"]); // before the subscription: not delivered
  const h = client(server.url);
  t.after(() => h.close());
  const rec = recordPattern(h, "p/*");
  await waitFor(() => rec.sub.live && rec.subscribed.some((s) => s.topic === "p/a"), "the pattern and p/a followed");
  assert.deepEqual(
    rec.subscribed.map(({ topic, seq, replayed, pattern }) => ({ topic, seq, replayed, pattern })),
    [{ topic: "p/a", seq: 2, replayed: 0, pattern: "p/*" }],
  );

  assert.equal(await h.publish("p/a", "a3"), 3);
  assert.equal(await h.publish("p/b", "b1"), 1); // a topic created after subscribing
  await publishAll(server, "p/b", ["b2"]);
  await publishAll(server, "p/b/deep", ["no"]); // `*` is one segment
  await publishAll(server, "q/b", ["no"]);
  await publishAll(server, "p/a", ["a4"]);
  await waitFor(() => rec.count("p/a") === 2 && rec.count("p/b") === 2, "a3, a4, b1, b2");
  assert.deepEqual(rec.got, { "p/a": ["a3", "a4"], "p/b": ["b1", "b2"] });
  assert.deepEqual(rec.seqs, { "p/a": [3, 4], "p/b": [1, 2] });
  const b = rec.subscribed.find((s) => s.topic === "p/b");
  assert.deepEqual({ seq: b.seq, replayed: b.replayed, pattern: b.pattern }, { seq: 0, replayed: 0, pattern: "p/*" });
  assert.deepEqual(Object.keys(rec.sub.positions()).sort(), ["p/a", "p/b"]);
  assert.equal(rec.sub.positions()["p/a"].seq, 4);
  assert.equal(rec.sub.topic, "p/*");
  assert.deepEqual([rec.sub.epoch, rec.sub.seq], [null, 0]);

  // Each message arrives once: subscriptions that overlap the pattern are refused here.
  for (const other of ["p/a", "p/*", "p/**", "*/b", "**"]) {
    assert.throws(() => h.subscribe(other, () => {}), (e) => e.code === "already_subscribed", other);
  }
  const deep = recordPattern(h, "p/*/deep"); // p/x/deep never matches p/*: no overlap
  await waitFor(() => deep.sub.live, "p/*/deep accepted");

  rec.sub.unsubscribe();
  rec.sub.unsubscribe(); // twice is harmless
  assert.equal(rec.sub.active, false);
  await publishAll(server, "p/a", ["a5"]);
  // The topic is free again for a subscription by name.
  const direct = { got: [] };
  let live = 0;
  h.subscribe("p/a", { onMessage: (d) => direct.got.push(d), onSubscribed: () => live++ });
  await waitFor(() => live === 1, "p/a subscribed by name");
  await publishAll(server, "p/a", ["a6"]);
  await publishAll(server, "p/b", ["b3"]);
  await waitFor(() => direct.got.length === 1, "a6 on the direct subscription");
  assert.deepEqual(direct.got, ["a6"]);
  assert.deepEqual(rec.got, { "p/a": ["a3", "a4"], "p/b": ["b1", "b2"] }, "nothing after unsubscribe");
  assert.deepEqual([rec.gaps, rec.errors], [[], []]);
});

test("a pattern resumes every topic with its since map across cut connections: each message exactly once, in order", async (t) => {
  const server = await startHerald(["--history", "10000"]);
  const topics = ["r/1", "r/2/x", "r/3"];
  for (const topic of topics) await publishAll(server, topic, ["0"]); // they exist before the subscription
  const h = client(server.url, { minDelay: 10, maxDelay: 50 });
  t.after(() => h.close());
  const rec = recordPattern(h, "r/**");
  const opens = () => h.events.filter((e) => e.e === "open").length;
  await waitFor(() => rec.sub.live && rec.subscribed.length === 3, "the pattern and its three topics");
  const N = 300;
  let cuts = 0;
  for (let i = 1; i <= N; i++) {
    await publishAll(server, topics[i % 3], [String(i)]);
    if (i % 50 === 25) {
      // Cut a live subscription each time: wait for the resubscribe after the previous cut.
      await waitFor(() => opens() === cuts + 1 && rec.sub.live, `connection ${cuts + 1} live`);
      h._ws.terminate(); // `ws`: drop the TCP connection without a close frame
      cuts++;
    }
  }
  await waitFor(() => topics.every((tp) => rec.count(tp) === N / 3), `${N} messages`, 20000);
  assert.equal(cuts, 6);
  for (const [k, topic] of topics.entries()) {
    const want = range(N).filter((v) => Number(v) % 3 === k);
    assert.deepEqual(rec.got[topic], want, topic);
    assert.deepEqual(
      rec.seqs[topic],
      want.map((_, j) => j + 2),
      `${topic}: seq 1 was before the subscription`,
    );
  }
  assert.deepEqual(rec.gaps, []);
  assert.deepEqual(rec.errors, []);
  assert.ok(rec.subscribed.some((s) => s.replayed > 0), "some messages came back through the since map");
});

test("held off while messages go on: replay within history, history_gap and untracked reported per topic, then live", async (t) => {
  const server = await startHerald(["--history", "5"]);
  const dead = `ws://127.0.0.1:${await freePort()}/`;
  let away = false;
  const h = client(() => (away ? dead : server.url));
  t.after(() => h.close());
  const rec = recordPattern(h, "g/*");
  await waitFor(() => rec.sub.live, "the pattern accepted");
  await publishAll(server, "g/a", ["a1", "a2"]);
  await publishAll(server, "g/b", ["b1"]);
  await waitFor(() => rec.count("g/a") === 2 && rec.count("g/b") === 1, "a1, a2, b1");
  const epochA = rec.sub.positions()["g/a"].epoch;

  away = true;
  h._ws.terminate();
  await waitFor(() => h.state !== "open", "disconnected");
  await publishAll(server, "g/a", range(10, 3).map((s) => `a${s}`)); // a3..a12: history keeps 5
  await publishAll(server, "g/b", ["b2", "b3"]); // kept: replayed
  await publishAll(server, "g/new", ["n1", "n2", "n3"]); // created while away
  away = false;

  await waitFor(() => rec.gaps.length === 2 && rec.count("g/b") === 3 && h.state === "open", "the gaps and b2, b3");
  const byTopic = Object.fromEntries(rec.gaps.map((g) => [g.topic, g]));
  assert.deepEqual(byTopic["g/a"], { reason: "history_gap", topic: "g/a", epoch: epochA, lastSeq: 2 });
  assert.deepEqual(byTopic["g/new"], { reason: "untracked", topic: "g/new", epoch: null, lastSeq: 0, nextSeq: 4 });
  assert.deepEqual(rec.got["g/b"], ["b1", "b2", "b3"]);
  assert.deepEqual(rec.seqs["g/b"], [1, 2, 3]);

  // Live again on every topic, from the server's current position.
  await publishAll(server, "g/a", ["a13"]);
  await publishAll(server, "g/new", ["n4"]);
  await publishAll(server, "g/b", ["b4"]);
  await waitFor(() => rec.count("g/a") === 3 && rec.count("g/new") === 1 && rec.count("g/b") === 4, "a13, n4, b4");
  assert.deepEqual(rec.got["g/a"], ["a1", "a2", "a13"]);
  assert.deepEqual(rec.seqs["g/a"], [1, 2, 13]);
  assert.deepEqual(rec.seqs["g/new"], [4]);
  assert.equal(rec.gaps.length, 2, "one report per topic");
});

test("a server killed and restarted: each followed topic reports epoch_changed with its last seq, then live on the new epoch", async (t) => {
  const port = await freePort();
  let server = await startHerald(["--history", "100"], port);
  const h = client(server.url);
  t.after(() => h.close());
  const rec = recordPattern(h, "k/**");
  await waitFor(() => rec.sub.live, "the pattern accepted");
  await publishAll(server, "k/a", range(3));
  await publishAll(server, "k/b/c", range(2));
  await waitFor(() => rec.count("k/a") === 3 && rec.count("k/b/c") === 2, "five messages");
  const before = rec.sub.positions();

  await server.stop("SIGKILL");
  await waitFor(() => h.events.some((e) => e.e === "reconnecting"), "reconnecting after the kill");
  server = await startHerald(["--history", "100"], port);

  await waitFor(() => rec.gaps.length === 2, "a gap per topic");
  const gaps = [...rec.gaps].sort((x, y) => x.topic.localeCompare(y.topic));
  assert.deepEqual(gaps, [
    { reason: "epoch_changed", topic: "k/a", epoch: before["k/a"].epoch, lastSeq: 3 },
    { reason: "epoch_changed", topic: "k/b/c", epoch: before["k/b/c"].epoch, lastSeq: 2 },
  ]);
  await waitFor(() => rec.sub.live && rec.sub.positions()["k/a"]?.epoch !== before["k/a"].epoch, "k/a followed on the new epoch");
  assert.equal(await h.publish("k/a", "new-1"), 1);
  await waitFor(() => rec.count("k/a") === 4, "the first message of the new epoch");
  assert.deepEqual(rec.seqs["k/a"], [1, 2, 3, 1]);
  assert.equal(rec.gaps.length, 2);
});

test("per-topic refusals leave the pattern running; a bad pattern ends with onError", async (t) => {
  const server = await startHerald(["--max-topics-per-conn", "3"]);
  const h = client(server.url);
  t.after(() => h.close());
  const rec = recordPattern(h, "m/*");
  await waitFor(() => rec.sub.live, "the pattern accepted");
  // One at a time: two owners' announcements could otherwise reach the connection in any order.
  await publishAll(server, "m/1", ["x"]);
  await waitFor(() => rec.count("m/1") === 1, "m/1 followed");
  await publishAll(server, "m/2", ["y"]);
  await waitFor(() => rec.count("m/2") === 1, "m/2 followed");
  await publishAll(server, "m/3", ["z"]); // the pattern, m/1 and m/2 fill the connection's 3
  await waitFor(() => rec.errors.length === 1 && rec.count("m/2") === 1, "too_many_topics for m/3");
  assert.deepEqual([rec.errors[0].code, rec.errors[0].topic], ["too_many_topics", "m/3"]);
  assert.equal(rec.sub.active, true);
  await publishAll(server, "m/1", ["x2"]);
  await waitFor(() => rec.count("m/1") === 2, "m/1 goes on");
  assert.deepEqual(rec.got, { "m/1": ["x", "x2"], "m/2": ["y"] });

  const bad = recordPattern(h, "bad*/x");
  await waitFor(() => bad.errors.length === 1, "the refusal");
  assert.equal(bad.errors[0].code, "bad_topic");
  assert.equal(bad.errors[0].topic, undefined);
  assert.equal(bad.sub.active, false);
  assert.throws(() => h.subscribe("n/*", () => {}, { rewind: 1 }), TypeError);
});
