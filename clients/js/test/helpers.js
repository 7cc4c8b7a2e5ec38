// Test support: real `herald` processes (target/release/herald, built by cargo), a real
// `redis-server` on a private loopback port, HTTP publishing, HS256 tokens, and bounded waits.
// Every process started here is killed by `stopAll()` (call it in `after`).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, request } from "node:http";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";

import { Herald } from "../src/herald-client.js";

export const BIN = process.env.HERALD_BIN || fileURLToPath(new URL("../../../target/release/herald", import.meta.url));

const children = new Set();

/** A free loopback port (bound, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `herald --listen 127.0.0.1:PORT --stats-interval 0 ARGS…` and waits (10 s at most) for
 * its `listening on ws://` line, and for `broker: up` when `--broker` is given.
 */
export async function startHerald(args = [], port = 0) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build --release\` first`);
  const child = spawn(BIN, ["--listen", `127.0.0.1:${port}`, "--stats-interval", "0", "--threads", "2", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const wantBroker = args.includes("--broker");
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`herald did not start in 10 s; stdout ${out} stderr ${err}`)), 10000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on ws:\/\/(\S+)/.exec(out);
      if (m && (!wantBroker || out.includes("broker: up"))) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`herald exited (${code}) at start: ${err}`));
    });
  });
  const [, p] = addr.split(":");
  return {
    child,
    port: Number(p),
    url: `ws://${addr}/`,
    http: `http://${addr}`,
    stderr: () => err,
    /** Sends `signal` and waits (10 s at most) for the process to exit. */
    async stop(signal = "SIGKILL") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill(signal);
      await withTimeout(gone, 10000, `herald did not exit on ${signal}`);
    },
  };
}

/** A private redis-server (no persistence) on a free loopback port. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  let out = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("redis-server did not start in 10 s")), 10000);
    child.stdout.on("data", (d) => {
      out += d;
      if (/ready to accept connections/i.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`redis-server could not start (${e.message}); apt-get install redis-server`));
    });
  });
  return { child, url: `redis://127.0.0.1:${port}` };
}

/** Kills every process these helpers started. */
export async function stopAll() {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise((r) => {
          c.once("exit", r);
          c.kill("SIGKILL");
          setTimeout(r, 5000);
        }),
    ),
  );
}

/** HTTP publish; resolves {status, body}. */
export function post(httpBase, topic, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(
      `${httpBase}/${topic}`,
      { method: "POST", headers: { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body), ...headers } },
      (res) => {
        let data = "";
        res.on("data", (d) => (data += d));
        res.on("end", () => resolve({ status: res.statusCode, body: data }));
      },
    );
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("HTTP publish timed out")));
    req.end(body);
  });
}

/** An HS256 JWT (what `--jwt-secret` verifies). */
export function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** Polls `cond` every 10 ms until it is truthy; throws `what` after `ms`. */
export async function waitFor(cond, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
  ]);
}

/** A client over Node's `ws`, with quick reconnects for tests; records its events. */
export function client(url, options = {}) {
  const h = new Herald(url, { WebSocket, minDelay: 50, maxDelay: 500, ...options });
  h.events = [];
  for (const e of ["connecting", "open", "reconnecting", "closed", "error"]) h.on(e, (arg) => h.events.push({ e, ...arg, err: e === "error" ? arg : undefined }));
  return h;
}

/** Subscribes and records everything the handlers get. */
export function record(h, topic, opts) {
  const rec = { got: [], gaps: [], errors: [], seqs: [], subscribed: [] };
  rec.sub = h.subscribe(
    topic,
    {
      onMessage: (data, meta) => {
        rec.got.push(data);
        rec.seqs.push(meta.seq);
        rec.meta = meta;
      },
      onGap: (g) => rec.gaps.push(g),
      onError: (e) => rec.errors.push(e),
      onSubscribed: (info) => rec.subscribed.push(info),
    },
    opts,
  );
  return rec;
}

/** 1..n as strings. */
export const range = (n, from = 1) => Array.from({ length: n }, (_, i) => String(from + i));
