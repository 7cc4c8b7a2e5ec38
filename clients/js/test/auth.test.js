// herald-client against a real herald with access control (--jwt-secret): the token goes in
// the `bearer.<jwt>` subprotocol, an expired token (close 1008 "token expired") is replaced
// with a fresh one from getToken() and nothing is lost, and a refused upgrade (HTTP 401) or a
// forbidden topic is reported, not retried.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { WebSocket } from "ws";

import { client, jwt, post, range, record, startHerald, stopAll, waitFor } from "./helpers.js";

after(stopAll);

const SECRET = "a-test-secret-that-is-at-least-32-bytes-long";
const PUBLISH_KEY = "backend-key";
const now = () => Math.floor(Date.now() / 1000);

test("token expiry: close 1008, reconnect with a fresh token from getToken(), since recovery loses nothing", async (t) => {
  const server = await startHerald(["--jwt-secret", SECRET, "--jwt-leeway", "0s", "--history", "1000", "--publish-key", PUBLISH_KEY]);
  const tokens = [];
  // Each token lives 2 s: the first connection is closed for expiry while we publish.
  const h = client(server.url, {
    getToken: async () => {
      const tok = jwt(SECRET, { exp: now() + 2, subscribe: ["feed"], publish: ["feed"] });
      tokens.push(tok);
      return tok;
    },
  });
  t.after(() => h.close());
  const rec = record(h, "feed");
  await waitFor(() => rec.subscribed.length === 1, "subscribed with the first token");
  const auth = { Authorization: `Bearer ${PUBLISH_KEY}` };
  let n = 0;
  const deadline = Date.now() + 15000;
  // Publish until the client has reconnected for expiry and resubscribed, then a little more.
  while (Date.now() < deadline && !(rec.subscribed.length >= 2 && n >= 50)) {
    n++;
    const r = await post(server.http, "feed", String(n), auth);
    assert.equal(r.status, 202, r.body);
    await new Promise((r) => setTimeout(r, 20)); // pacing the publisher, not synchronisation
  }
  await waitFor(() => rec.got.length >= n, `${n} messages (got ${rec.got.length})`);
  const expired = h.events.find((e) => e.e === "reconnecting");
  assert.ok(expired, "reconnected");
  assert.equal(expired.code, 1008);
  assert.match(expired.reason, /token expired/);
  assert.ok(tokens.length >= 2, "getToken() was called again for the new connection");
  assert.deepEqual(rec.got, range(n), "every message exactly once, in order");
  assert.deepEqual(rec.gaps, []);
  assert.ok(!h.events.some((e) => e.e === "error"), "no error event");
  // Publishing on the refreshed connection works with the new token.
  assert.equal(await h.publish("feed", "from-client"), n + 1);
});

test("HTTP 401 at the upgrade is terminal: an error event with 401, state closed, no retry", async (t) => {
  const server = await startHerald(["--jwt-secret", SECRET]);
  let calls = 0;
  const h = client(server.url, {
    getToken: () => {
      calls++;
      return jwt("another-secret-that-is-at-least-32-bytes!!", { exp: now() + 60, subscribe: ["*"] });
    },
  });
  t.after(() => h.close());
  await waitFor(() => h.state === "closed", "closed");
  const err = h.events.find((e) => e.e === "error");
  assert.ok(err, "an error event");
  assert.equal(err.err.code, 401);
  assert.equal(calls, 1);
  assert.ok(!h.events.some((e) => e.e === "reconnecting"));
});

test("a topic the token does not grant: onError forbidden for it, the others go on; publish rejected forbidden", async (t) => {
  const server = await startHerald(["--jwt-secret", SECRET]);
  const h = client(server.url, {
    getToken: () => jwt(SECRET, { exp: now() + 60, subscribe: ["ok/*"], publish: ["ok/*"] }),
  });
  t.after(() => h.close());
  const no = record(h, "secret");
  const yes = record(h, "ok/1");
  await waitFor(() => no.errors.length === 1 && yes.subscribed.length === 1, "answers");
  assert.equal(no.errors[0].code, "forbidden");
  await assert.rejects(h.publish("secret", "x"), (e) => e.code === "forbidden");
  assert.equal(await h.publish("ok/1", "x"), 1);
  await waitFor(() => yes.got.length === 1, "the granted topic's message");
  assert.equal(h.state, "open");
});

test("HTTP 403 at the upgrade (an origin not allowed) is terminal: an error event with 403", async (t) => {
  const server = await startHerald(["--allowed-origins", "https://app.example.com"]);
  // A browser would send its page's origin; `ws` takes it as an option.
  class FromEvil extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin: "https://evil.example" });
    }
  }
  const h = client(server.url, { WebSocket: FromEvil });
  t.after(() => h.close());
  await waitFor(() => h.state === "closed", "closed");
  const err = h.events.find((e) => e.e === "error");
  assert.equal(err && err.err.code, 403);
  assert.ok(!h.events.some((e) => e.e === "reconnecting"));
  // The same server lets the allowed origin in.
  class FromApp extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin: "https://app.example.com" });
    }
  }
  const ok = client(server.url, { WebSocket: FromApp });
  t.after(() => ok.close());
  await waitFor(() => ok.state === "open", "open from the allowed origin");
});
