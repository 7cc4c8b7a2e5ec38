// herald-client against two real herald nodes in cluster mode (--broker, a real redis-server):
// a node drained with SIGTERM closes its clients with 1001, the client reconnects at once to
// the other node, resubscribes with since, and loses nothing while publishing goes on.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, test } from "node:test";

import { client, freePort, post, range, record, startHerald, startRedis, stopAll, waitFor } from "./helpers.js";

after(stopAll);

const hasRedis = spawnSync("redis-server", ["--version"]).status === 0;

test("SIGTERM drain: 1001, reconnect at once to another node, nothing lost (--broker)", { skip: !hasRedis && process.env.CI !== "true" && "redis-server is not installed" }, async (t) => {
  const redis = await startRedis();
  const ports = [await freePort(), await freePort()];
  const nodes = [];
  for (const p of ports) nodes.push(await startHerald(["--broker", redis.url], p));
  // Each attempt goes to the next node: what a client behind a load balancer sees.
  let turn = 0;
  const urls = ports.map((p) => `ws://127.0.0.1:${p}/`);
  const h = client(() => urls[turn++ % urls.length], { minDelay: 200, maxDelay: 2000 });
  t.after(() => h.close());
  const a = record(h, "t1");
  const b = record(h, "t2");
  await waitFor(() => a.subscribed.length === 1 && b.subscribed.length === 1, "subscribed on node 0");

  // Publish 1..N on both topics through node 1 while node 0 (the client's) drains and comes back.
  const N = 300;
  let restarted = false;
  for (let i = 1; i <= N; i++) {
    for (const topic of ["t1", "t2"]) {
      const r = await post(nodes[1].http, topic, String(i));
      assert.equal(r.status, 202, r.body);
    }
    if (i === 100) await nodes[0].stop("SIGTERM");
    if (i === 200) {
      nodes[0] = await startHerald(["--broker", redis.url], ports[0]);
      restarted = true;
    }
  }
  assert.ok(restarted);
  await waitFor(() => a.got.length >= N && b.got.length >= N, `${N} messages on both topics`, 20000);
  assert.deepEqual(a.got, range(N));
  assert.deepEqual(b.got, range(N));
  assert.deepEqual([a.gaps, b.gaps], [[], []]);
  const rc = h.events.find((e) => e.e === "reconnecting");
  assert.equal(rc.code, 1001, JSON.stringify(h.events));
  assert.ok(rc.delay < 200, `at once, with jitter below minDelay: ${rc.delay}`);
  // Recovery came from since on node 1 (resubscribed twice in all).
  assert.equal(a.subscribed.length, 2);
  assert.ok(a.subscribed[1].replayed >= 0);
});
