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
//
// A topic with a `*` is a pattern (`prices/*`, `feed/**`): one subscription follows every
// topic it matches. The client keeps a position per concrete topic it followed and resumes
// them all with the pattern's `since` map, so each topic keeps the same contract.

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
  maxPatternTopics: 1000,
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
   * @param {string} [topic] the concrete topic a pattern subscription's error names
   */
  constructor(code, reason, topic) {
    super(reason ? `${code}: ${reason}` : String(code));
    this.name = "HeraldError";
    this.code = code;
    this.reason = reason || "";
    if (topic != null) this.topic = topic;
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

  /** True while the server has confirmed this subscription on the current connection. */
  get live() {
    return this._live && this.active;
  }

  /** Stop receiving this topic. Safe to call twice; no handler runs after it returns. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._client._unsubscribe(this);
  }
}

/**
 * A pattern's subscription (`prices/*`). `topic` is the pattern; `epoch` and `seq` stay unset:
 * positions are per concrete topic (see {@link PatternSubscription#positions}).
 */
export class PatternSubscription extends Subscription {
  /** @internal */
  constructor(client, pattern, handlers, opts) {
    super(client, pattern, handlers, opts);
    this._topics = new Map(); // concrete topic -> {epoch (null after a gap), seq, at}
    this._accepted = false; // the server accepted the pattern once: later subscribes resume
    this._resuming = false; // the subscribe in flight resumes (a since map, or a reconnect)
  }

  /**
   * The last delivered position of each topic followed (`{topic: {epoch, seq}}`), as the
   * `since` option of a later `subscribe` of the pattern takes it.
   */
  positions() {
    const out = {};
    for (const [topic, p] of this._topics) if (p.epoch != null) out[topic] = { epoch: p.epoch, seq: p.seq };
    return out;
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
    this._subs = new Map(); // topic or pattern -> Subscription
    this._followed = new Map(); // topic -> PatternSubscription following it (this connection)
    this._tick = 0; // counts pattern deliveries: which positions are the most recent
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
   *
   * A `topic` with a `*` is a pattern: the handlers get every matching topic, each with the
   * same contract, `meta.topic` and `info.topic` naming the concrete one. `opts.since` is then
   * a map `{topic: {epoch, seq}}`; `rewind` is not taken. A pattern overlapping another
   * subscription of this client throws `already_subscribed` (each message arrives once).
   */
  subscribe(topic, handlers, opts = {}) {
    if (this._state === "closed") throw new HeraldError("closed", "the client is closed");
    if (typeof topic !== "string") throw new TypeError("the topic must be a string");
    if (this._subs.has(topic)) {
      throw new HeraldError("already_subscribed", `${topic} is already subscribed on this client`);
    }
    const pattern = topic.includes("*");
    for (const other of this._subs.values()) {
      if ((pattern || other instanceof PatternSubscription) && overlaps(topic, other.topic)) {
        throw new HeraldError("already_subscribed", `${topic} overlaps ${other.topic}, already subscribed on this client`);
      }
    }
    if (typeof handlers === "function") handlers = { onMessage: handlers };
    if (opts.since && opts.rewind != null) throw new TypeError("since and rewind cannot both be given");
    if (pattern && opts.rewind != null) throw new TypeError("a pattern takes no rewind (it is per topic)");
    const sub = pattern ? new PatternSubscription(this, topic, handlers || {}, opts) : new Subscription(this, topic, handlers || {}, opts);
    if (pattern && opts.since) {
      for (const [t, p] of Object.entries(opts.since)) sub._topics.set(t, { epoch: p.epoch, seq: p.seq, at: 0 });
      sub._accepted = true; // resuming an earlier session: topics it did not know are reported
    } else if (opts.since) {
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
    this._followed.clear();
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
    this._followed.clear();
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
    if (sub instanceof PatternSubscription) {
      this._unfollow(sub); // its topics are announced again
      entry = this._patternEntry(sub);
    } else if (sub.epoch != null) entry = { topic: sub.topic, since: { epoch: sub.epoch, seq: sub.seq } };
    else if (sub._start.rewind != null) entry = { topic: sub.topic, rewind: sub._start.rewind };
    this._send({ op: "subscribe", id, topics: [entry] });
  }

  /**
   * A pattern's subscribe entry: the `since` map of the `maxPatternTopics` most recently
   * delivered topics. Positions beyond it are forgotten here, which keeps memory bounded; a
   * forgotten topic that had messages meanwhile is reported (`untracked`) when it comes back.
   */
  _patternEntry(sub) {
    let kept = [...sub._topics];
    if (kept.length > this._opts.maxPatternTopics) {
      kept.sort((a, b) => b[1].at - a[1].at);
      kept = kept.slice(0, this._opts.maxPatternTopics);
      sub._topics = new Map(kept);
    }
    sub._resuming = sub._accepted;
    const since = {};
    let any = false;
    for (const [topic, p] of kept) {
      if (p.epoch == null) continue; // a gap was reported: the server follows it from now
      since[topic] = { epoch: p.epoch, seq: p.seq };
      any = true;
    }
    return any ? { topic: sub.topic, since } : sub.topic;
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.topic) !== sub) return;
    this._subs.delete(sub.topic);
    this._unfollow(sub);
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

  /** Forget which topics `sub` (a pattern) follows on this connection. */
  _unfollow(sub) {
    if (!(sub instanceof PatternSubscription)) return;
    for (const [topic, s] of this._followed) if (s === sub) this._followed.delete(topic);
  }

  _onSubscribed(m) {
    const sub = this._byId.get(m.id);
    if (!sub || !sub.active) return;
    if (sub instanceof PatternSubscription) return this._onFollowed(sub, m);
    sub._live = true;
    sub.epoch = m.epoch;
    // The replayed messages (seq - replayed + 1 .. seq) follow; live ones after them.
    sub.seq = m.seq - (m.replayed || 0);
    const h = sub._handlers.onSubscribed;
    if (h) guard(() => h({ topic: sub.topic, epoch: m.epoch, seq: m.seq, replayed: m.replayed || 0 }));
  }

  /**
   * A pattern's `subscribed`: the pattern's own (no `topic`), and one per concrete topic before
   * its first message, with the position its replay starts after (in either order).
   */
  _onFollowed(sub, m) {
    sub._accepted = true;
    if (m.topic == null) {
      sub._live = true;
      return;
    }
    let p = sub._topics.get(m.topic);
    const from = m.seq - (m.replayed || 0);
    if (!p) {
      p = { epoch: null, seq: 0, at: 0 };
      sub._topics.set(m.topic, p);
      // Resuming, a topic the client kept no position for already had messages: they were
      // published while this client was away (or its position was forgotten), and are lost.
      if (sub._resuming && from > 0) this._gap(sub, { reason: "untracked", topic: m.topic, epoch: null, lastSeq: 0, nextSeq: from + 1 });
      if (!sub.active) return;
    }
    p.epoch = m.epoch;
    p.seq = from;
    p.at = ++this._tick;
    this._followed.set(m.topic, sub);
    const h = sub._handlers.onSubscribed;
    if (h) guard(() => h({ topic: m.topic, epoch: m.epoch, seq: m.seq, replayed: m.replayed || 0, pattern: sub.topic }));
  }

  _onMessage(m) {
    const sub = this._subs.get(m.topic);
    if (!sub) return this._onPatternMessage(m);
    if (!sub._live) return; // unsubscribed, or the previous subscription's tail
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

  /** A message of a topic a pattern follows: the same checks as a topic's, per topic. */
  _onPatternMessage(m) {
    const sub = this._followed.get(m.topic);
    if (!sub) return; // unsubscribed, or not followed (yet) on this connection
    const p = sub._topics.get(m.topic);
    if (!p || m.seq <= p.seq) return; // already delivered
    if (m.seq !== p.seq + 1) {
      this._gap(sub, { reason: "seq_jump", topic: m.topic, epoch: p.epoch, lastSeq: p.seq, nextSeq: m.seq });
      if (!sub.active) return;
    }
    p.seq = m.seq;
    p.at = ++this._tick;
    const onMessage = sub._handlers.onMessage;
    if (!onMessage) return;
    const data = m.data !== undefined ? m.data : fromBase64(m.data_b64);
    try {
      onMessage(data, { topic: m.topic, seq: m.seq, epoch: p.epoch });
    } catch (e) {
      rethrow(e);
    }
  }

  /**
   * An error naming one topic of a pattern: for a gap code the server follows the topic from
   * now on (its `subscribed` comes next); otherwise (`too_many_topics`, `forbidden`) the topic
   * is not followed on this connection. The pattern goes on either way.
   */
  _onTopicError(sub, m) {
    const p = sub._topics.get(m.topic);
    this._followed.delete(m.topic);
    if (GAP_CODES.has(m.code)) {
      this._gap(sub, { reason: m.code, topic: m.topic, epoch: p ? p.epoch : null, lastSeq: p ? p.seq : 0 });
      if (p) p.epoch = null;
      return;
    }
    sub._topics.delete(m.topic);
    if (sub._handlers.onError) guard(() => sub._handlers.onError(new HeraldError(m.code, m.reason, m.topic)));
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
    if (sub instanceof PatternSubscription && m.topic != null && m.topic !== sub.topic) return this._onTopicError(sub, m);
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
    // A topic's duplicate subscribe: the first goes on. (Overlaps with patterns are refused
    // by subscribe() before they reach the server.)
    if (m.code === "already_subscribed" && !(sub instanceof PatternSubscription)) return;
    // forbidden, bad_topic, too_many_topics, ...: this subscription ends.
    sub.active = false;
    this._subs.delete(sub.topic);
    this._unfollow(sub);
    this._byId.delete(sub._id);
    if (sub._handlers.onError) guard(() => sub._handlers.onError(new HeraldError(m.code, m.reason)));
  }

  _gap(sub, info) {
    if (sub._handlers.onGap) guard(() => sub._handlers.onGap(info));
  }
}

/**
 * Whether some topic matches both `a` and `b` (topics or patterns: `*` is one segment, a last
 * `**` one or more), as herald decides overlaps (docs/protocol.md, "Pattern subscriptions").
 */
function overlaps(a, b) {
  const x = a.split("/");
  const y = b.split("/");
  for (let i = 0; ; i++) {
    if (x[i] === "**") return y.length > i;
    if (y[i] === "**") return x.length > i;
    if (i === x.length || i === y.length) return x.length === y.length;
    if (x[i] !== y[i] && x[i] !== "*" && y[i] !== "*") return false;
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
