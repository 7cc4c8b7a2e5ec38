// herald-client: the browser and Node client for Herald's `herald.v1` protocol
// (docs/protocol.md, docs/client.md). One ES module, no dependencies, no global state.
//
// One connection carries many topics. The client remembers the last (epoch, seq) it delivered
// per topic and, after every reconnect, resubscribes with `since`, so a handler sees each
// message once and in order. When that cannot hold (the server restarted, history ran out, a
// seq jumped) it says so through `onGap`: it is never silent.
//
// One explicit state machine drives the connection:
//
//   connecting ──open──▶ open ──close──▶ reconnecting ──timer──▶ connecting …
//        │                 │                  │
//        └──── terminal close code, HTTP 401/403, or close() ────▶ closed (final)
//
// Every timer is owned by the client and cancelled by close().

/** Subprotocol spoken with the server (docs/protocol.md). */
const PROTOCOL = "herald.v1";

/** Request errors that mean "the position you asked for is gone": report a gap, go live. */
const GAP_CODES = new Set(["history_gap", "epoch_changed", "since_ahead"]);

/** Default options; every one is documented in docs/client.md and herald-client.d.ts. */
const DEFAULTS = {
  minDelay: 500,
  maxDelay: 30000,
  factor: 2,
  stableAfter: 5000,
  queueSize: 1000,
  highWaterMark: 1 << 20,
  retryUnavailable: 1000,
};

/**
 * An error the server or the client reports. `code` is what programs match on: a server error
 * code (`forbidden`, `bad_topic`, `unavailable`, ...), a close code (`1008`), an HTTP status at
 * the upgrade (`401`, `403`), or one of the client's own (`queue_full`, `disconnected`,
 * `closed`).
 */
export class HeraldError extends Error {
  /**
   * @param {string|number} code
   * @param {string} [reason]
   */
  constructor(code, reason) {
    super(reason ? `${code}: ${reason}` : String(code));
    this.name = "HeraldError";
    this.code = code;
    this.reason = reason || "";
  }
}

/**
 * One subscription, returned by {@link Herald#subscribe}. Its position (`epoch`, `seq`) is the
 * last message handed to `onMessage`; the client resubscribes from it after a reconnect.
 */
export class Subscription {
  /** @internal */
  constructor(client, topic, handlers, opts) {
    this.topic = topic;
    /** Epoch of the last delivered message (opaque string), or null before the first answer. */
    this.epoch = null;
    /** Seq of the last delivered message (0: none yet). */
    this.seq = 0;
    /** False once unsubscribed or ended by a refusal; no handler is called after that. */
    this.active = true;
    this._client = client;
    this._handlers = handlers;
    this._start = opts; // {since}|{rewind}|{} for the first subscribe only
    this._id = 0; // id of the subscribe in flight or answered on this connection
    this._live = false; // `subscribed` received on this connection
    this._retry = null; // timer for an `unavailable` subscribe
  }

  /** Stop receiving this topic. Safe to call twice; no handler runs after it returns. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._client._unsubscribe(this);
  }
}

/**
 * A herald.v1 connection that reconnects by itself. Create one per server (or cluster), then
 * subscribe and publish; `close()` ends it for good.
 */
export class Herald {
  /**
   * @param {string | (() => string)} url `ws://` or `wss://` URL, or a function called before
   *   every attempt (to spread reconnects over several nodes).
   * @param {object} [options] see herald-client.d.ts
   */
  constructor(url, options = {}) {
    this._url = url;
    this._opts = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("herald-client: no WebSocket here; pass options.WebSocket (e.g. from 'ws')");
    }
    this._state = "connecting";
    this._ws = null;
    this._attempt = 0; // failed attempts since the last stable connection
    this._nextId = 1;
    this._subs = new Map(); // topic -> Subscription
    this._byId = new Map(); // subscribe id -> Subscription (this connection)
    this._pending = new Map(); // publish id -> {resolve, reject}
    this._queue = []; // publishes not yet written: {frame, resolve, reject}
    this._listeners = new Map(); // event -> Set<fn>
    this._timers = new Set();
    this._drains = new Set(); // rejecters of drained() promises still waiting
    this._stableTimer = null;
    this._flushTimer = null;
    // Start after the caller's synchronous code, so listeners added right after
    // construction see the first `connecting`.
    queueMicrotask(() => this._connect());
  }

  /** Current state: `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this._state;
  }

  /**
   * Bytes written to the socket but not yet sent, plus the publishes waiting in the outgoing
   * queue (counted by their frame length). Publishers that produce faster than the network
   * drains watch this, or `await herald.drained()`.
   */
  get bufferedAmount() {
    let queued = 0;
    for (const q of this._queue) queued += q.frame.length;
    return (this._ws ? this._ws.bufferedAmount : 0) + queued;
  }

  /**
   * Listen to `connecting`, `open`, `reconnecting`, `closed` or `error`. Returns a function
   * that removes the listener.
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Subscribe to `topic`. `handlers.onMessage(data, {topic, seq, epoch})` gets every message
   * once, in order, across reconnects; `handlers.onGap(info)` is told when that cannot hold;
   * `handlers.onError(err)` when the server refuses the topic (the subscription then ends);
   * `handlers.onSubscribed(info)` each time the server confirms it (after every reconnect too).
   * `opts` (`{since: {epoch, seq}}` or `{rewind: n}`) applies to the first subscribe only.
   */
  subscribe(topic, handlers, opts = {}) {
    if (this._state === "closed") throw new HeraldError("closed", "the client is closed");
    if (this._subs.has(topic)) {
      throw new HeraldError("already_subscribed", `${topic} is already subscribed on this client`);
    }
    if (typeof handlers === "function") handlers = { onMessage: handlers };
    if (opts.since && opts.rewind != null) throw new TypeError("since and rewind cannot both be given");
    const sub = new Subscription(this, topic, handlers || {}, opts);
    if (opts.since) {
      sub.epoch = opts.since.epoch;
      sub.seq = opts.since.seq;
    }
    this._subs.set(topic, sub);
    if (this._state === "open") this._sendSubscribe(sub);
    return sub;
  }

  /**
   * Publish `data` (a string is sent as text, bytes as binary) to `topic`. Resolves with the
   * seq the server gave it (`null`: nobody subscribes and history is off); rejects with the
   * server's error code, `queue_full` at once when the outgoing queue is full, `disconnected`
   * when the connection dropped before the answer (it may or may not have been published), or
   * `closed`.
   */
  publish(topic, data) {
    return new Promise((resolve, reject) => {
      if (this._state === "closed") return reject(new HeraldError("closed", "the client is closed"));
      const id = this._nextId++;
      const msg = { op: "publish", id, topic };
      if (typeof data === "string") msg.data = data;
      else msg.data_b64 = toBase64(data);
      const entry = { id, frame: JSON.stringify(msg), resolve, reject };
      if (this._state === "open" && this._queue.length === 0 && this._ws.bufferedAmount <= this._opts.highWaterMark) {
        this._write(entry);
      } else if (this._queue.length >= this._opts.queueSize) {
        reject(new HeraldError("queue_full", `${this._queue.length} publishes already wait`));
      } else {
        this._queue.push(entry);
        this._scheduleFlush();
      }
    });
  }

  /**
   * Resolves once `bufferedAmount` is at most `threshold` bytes (polled every 10 ms while
   * connected); rejects if the client is closed first.
   */
  drained(threshold = 0) {
    return new Promise((resolve, reject) => {
      if (this._state === "closed") return reject(new HeraldError("closed", "the client is closed"));
      const check = () => {
        if (this.bufferedAmount > threshold) {
          this._later(check, 10);
          return;
        }
        this._drains.delete(fail);
        resolve();
      };
      const fail = (err) => reject(err);
      this._drains.add(fail);
      check();
    });
  }

  /**
   * Close for good: no reconnect, every timer cancelled, queued and unanswered publishes
   * rejected with `closed`.
   */
  close(code = 1000, reason = "bye") {
    if (this._state === "closed") return;
    const ws = this._ws;
    this._ws = null;
    this._finish({ code, reason }, new HeraldError("closed", "the client is closed"));
    if (ws) {
      detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
  }

  // --- connection state machine ------------------------------------------------------------

  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (set) for (const fn of [...set]) guard(fn, arg);
  }

  _setState(state, arg) {
    this._state = state;
    this._emit(state, arg);
  }

  _later(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _cancel(t) {
    if (t == null) return;
    clearTimeout(t);
    this._timers.delete(t);
  }

  async _connect() {
    if (this._state === "closed") return;
    this._setState("connecting", { attempt: this._attempt });
    let token = null;
    if (this._opts.getToken) {
      try {
        token = await this._opts.getToken();
      } catch (e) {
        if (this._state !== "connecting") return;
        return this._retry({ code: 0, reason: `getToken failed: ${e && e.message ? e.message : e}` }, false);
      }
      if (this._state !== "connecting") return; // closed meanwhile
    }
    const url = typeof this._url === "function" ? this._url() : this._url;
    const protocols = token ? [PROTOCOL, `bearer.${token}`] : [PROTOCOL];
    let ws;
    try {
      ws = new this._WebSocket(url, protocols);
    } catch (e) {
      return this._terminal(new HeraldError("bad_url", String(e && e.message ? e.message : e)));
    }
    this._ws = ws;
    let httpStatus = 0;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onerror = (ev) => {
      // Browsers do not expose the HTTP status of a refused upgrade; `ws` (Node) says
      // "Unexpected server response: 401" in the event's message.
      const m = /Unexpected server response: (\d{3})/.exec(String(ev && (ev.message || ev.error)));
      if (m) httpStatus = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      detach(ws);
      this._onClose(ev.code, ev.reason || "", httpStatus);
    };
  }

  _onOpen(ws) {
    if (this._ws !== ws) return;
    if (ws.protocol && ws.protocol !== PROTOCOL) {
      return this._terminal(new HeraldError("bad_protocol", `server chose ${ws.protocol}, not ${PROTOCOL}`));
    }
    this._byId.clear();
    this._stableTimer = this._later(() => {
      this._stableTimer = null;
      this._attempt = 0;
    }, this._opts.stableAfter);
    this._setState("open", {});
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    this._flush();
  }

  _onClose(code, reason, httpStatus) {
    this._cancel(this._stableTimer);
    this._stableTimer = null;
    this._cancel(this._flushTimer);
    this._flushTimer = null;
    this._byId.clear();
    for (const sub of this._subs.values()) {
      sub._live = false;
      this._cancel(sub._retry);
      sub._retry = null;
    }
    // Sent but unanswered publishes may or may not have been numbered: the caller decides.
    const lost = new HeraldError("disconnected", `connection closed (${code}) before the server answered`);
    for (const p of this._pending.values()) p.reject(lost);
    this._pending.clear();
    if (this._state === "closed") return;

    if (httpStatus === 401 || httpStatus === 403) {
      return this._terminal(new HeraldError(httpStatus, `the server refused the upgrade with HTTP ${httpStatus}`));
    }
    if (code === 1008 && /token expired/i.test(reason)) return this._retry({ code, reason }, true);
    if (code === 1008 || code === 1003) return this._terminal(new HeraldError(code, reason));
    // 1001: the node is draining; 1012: it restarts or lost broker messages. Both mean
    // "come back now", and jitter keeps a whole node's clients from arriving at once.
    this._retry({ code, reason }, code === 1001 || code === 1012);
  }

  /** Schedule the next attempt: at once (with jitter up to minDelay) or with full-jitter backoff. */
  _retry({ code, reason }, soon) {
    const o = this._opts;
    let delay;
    if (soon) {
      delay = Math.random() * o.minDelay;
    } else {
      const cap = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, this._attempt));
      delay = Math.random() * cap;
    }
    this._attempt++;
    this._setState("reconnecting", { attempt: this._attempt, delay, code, reason });
    this._later(() => {
      if (this._state === "reconnecting") this._connect();
    }, delay);
  }

  _terminal(err) {
    this._emit("error", err);
    this._finish({ code: err.code, reason: err.reason }, err);
  }

  _finish(closeInfo, err) {
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._stableTimer = this._flushTimer = null;
    for (const sub of this._subs.values()) sub._retry = null;
    for (const q of this._queue) q.reject(err);
    this._queue = [];
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    for (const fail of this._drains) fail(err);
    this._drains.clear();
    if (this._ws) {
      detach(this._ws);
      try {
        this._ws.close();
      } catch {
        /* already closing */
      }
      this._ws = null;
    }
    this._setState("closed", closeInfo);
  }

  // --- outgoing ----------------------------------------------------------------------------

  _send(obj) {
    this._ws.send(JSON.stringify(obj));
  }

  _write(entry) {
    this._pending.set(entry.id, entry);
    this._ws.send(entry.frame);
  }

  /** Write queued publishes in order while the socket is below the high-water mark. */
  _flush() {
    while (this._state === "open" && this._queue.length && this._ws.bufferedAmount <= this._opts.highWaterMark) {
      this._write(this._queue.shift());
    }
    if (this._queue.length) this._scheduleFlush();
  }

  _scheduleFlush() {
    if (this._state !== "open" || this._flushTimer) return;
    this._flushTimer = this._later(() => {
      this._flushTimer = null;
      this._flush();
    }, 10);
  }

  _sendSubscribe(sub) {
    const id = this._nextId++;
    this._byId.delete(sub._id);
    sub._id = id;
    sub._live = false;
    this._byId.set(id, sub);
    let entry = sub.topic;
    if (sub.epoch != null) entry = { topic: sub.topic, since: { epoch: sub.epoch, seq: sub.seq } };
    else if (sub._start.rewind != null) entry = { topic: sub.topic, rewind: sub._start.rewind };
    this._send({ op: "subscribe", id, topics: [entry] });
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.topic) !== sub) return;
    this._subs.delete(sub.topic);
    this._byId.delete(sub._id);
    this._cancel(sub._retry);
    sub._retry = null;
    if (this._state === "open") this._send({ op: "unsubscribe", id: this._nextId++, topics: [sub.topic] });
  }

  // --- incoming ----------------------------------------------------------------------------

  _onFrame(text) {
    if (typeof text !== "string") return; // herald.v1 servers send text only
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    switch (m.type) {
      case "message":
        return this._onMessage(m);
      case "subscribed":
        return this._onSubscribed(m);
      case "published": {
        const p = this._pending.get(m.id);
        if (p) {
          this._pending.delete(m.id);
          p.resolve(m.seq);
        }
        return;
      }
      case "error":
        return this._onError(m);
      default:
        return; // `unsubscribed` and anything newer: nothing to do
    }
  }

  _onSubscribed(m) {
    const sub = this._byId.get(m.id);
    if (!sub || !sub.active) return;
    sub._live = true;
    sub.epoch = m.epoch;
    // The replayed messages (seq - replayed + 1 .. seq) follow; live ones after them.
    sub.seq = m.seq - (m.replayed || 0);
    const h = sub._handlers.onSubscribed;
    if (h) guard(() => h({ topic: sub.topic, epoch: m.epoch, seq: m.seq, replayed: m.replayed || 0 }));
  }

  _onMessage(m) {
    const sub = this._subs.get(m.topic);
    if (!sub || !sub._live) return; // unsubscribed, or the previous subscription's tail
    if (m.seq <= sub.seq) return; // already delivered
    if (m.seq !== sub.seq + 1) {
      this._gap(sub, { reason: "seq_jump", topic: sub.topic, epoch: sub.epoch, lastSeq: sub.seq, nextSeq: m.seq });
      if (!sub.active) return;
    }
    sub.seq = m.seq;
    const onMessage = sub._handlers.onMessage;
    if (!onMessage) return;
    const data = m.data !== undefined ? m.data : fromBase64(m.data_b64);
    // The hot path: no closure per message (guard() does the same for the other callbacks).
    try {
      onMessage(data, { topic: m.topic, seq: m.seq, epoch: sub.epoch });
    } catch (e) {
      rethrow(e);
    }
  }

  _onError(m) {
    if (m.id != null && this._pending.has(m.id)) {
      const p = this._pending.get(m.id);
      this._pending.delete(m.id);
      return p.reject(new HeraldError(m.code, m.reason));
    }
    // A subscribe refused, or (id null) a cluster node ending a stream it cannot fill.
    const sub = m.id != null ? this._byId.get(m.id) : m.topic != null && this._subs.get(m.topic);
    if (!sub || !sub.active) return;
    if (GAP_CODES.has(m.code)) {
      this._gap(sub, { reason: m.code, topic: sub.topic, epoch: sub.epoch, lastSeq: sub.seq });
      // Resume live from the server's current position (now, or after the next reconnect).
      sub.epoch = null;
      sub._start = {};
      if (sub.active && this._state === "open") this._sendSubscribe(sub);
      return;
    }
    if (m.code === "unavailable") {
      // Cluster mode, broker unreachable: ask again shortly.
      sub._live = false;
      sub._retry = this._later(() => {
        sub._retry = null;
        if (sub.active && this._state === "open") this._sendSubscribe(sub);
      }, this._opts.retryUnavailable);
      return;
    }
    if (m.code === "already_subscribed") return;
    // forbidden, bad_topic, too_many_topics, ...: this subscription ends.
    sub.active = false;
    this._subs.delete(sub.topic);
    this._byId.delete(sub._id);
    if (sub._handlers.onError) guard(() => sub._handlers.onError(new HeraldError(m.code, m.reason)));
  }

  _gap(sub, info) {
    if (sub._handlers.onGap) guard(() => sub._handlers.onGap(info));
  }
}

/** Call a user callback; an exception in it must not break the client, so rethrow it apart. */
function guard(fn, arg) {
  try {
    fn(arg);
  } catch (e) {
    rethrow(e);
  }
}

/** Report a callback's exception as uncaught (console, `window.onerror`), outside the client. */
function rethrow(e) {
  setTimeout(() => {
    throw e;
  }, 0);
}

/** Stop listening to a socket we are done with. `onerror` stays a no-op: Node's `ws` throws
 * an error event that nobody listens to (closing a socket that is still connecting). */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}

/** Base64 of bytes (ArrayBuffer or any view), in chunks so large payloads do not overflow the stack. */
function toBase64(data) {
  let bytes;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else throw new TypeError("publish data must be a string, an ArrayBuffer or a typed array");
  if (typeof bytes.toBase64 === "function") return bytes.toBase64();
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Bytes of a `data_b64` payload, as a Uint8Array. */
function fromBase64(b64) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(b64);
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
