// Type declarations for herald-client (src/herald-client.js). Checked in CI with
// `tsc --noEmit` together with examples/typed-usage.ts.

/** The connection's state; each change is also an event of the same name. */
export type HeraldState = "connecting" | "open" | "reconnecting" | "closed";

/** A message's payload: text stays a string, binary (`data_b64`) arrives as bytes. */
export type HeraldData = string | Uint8Array;

/** What a publish accepts: a string is sent as text, bytes as binary. */
export type HeraldPayload = string | ArrayBuffer | ArrayBufferView;

/** A position in a topic's numbering, as `subscribed` and messages report it. */
export interface HeraldPosition {
  /** Opaque; changes when the server (or, in cluster mode, Redis) lost the topic. */
  epoch: string;
  seq: number;
}

/** Where a message came from. */
export interface MessageMeta {
  topic: string;
  seq: number;
  epoch: string;
}

/** Why `onGap` was called (`untracked`: pattern subscriptions only). */
export type GapReason = "epoch_changed" | "history_gap" | "since_ahead" | "seq_jump" | "untracked";

/**
 * Messages were lost between `lastSeq` and what comes next: the client cannot recover them.
 * After `epoch_changed`, `history_gap` and `since_ahead` the subscription resumes live from the
 * server's current position; after `seq_jump` delivery goes on from `nextSeq`. `untracked`: a
 * pattern resumed and the server follows a topic the client kept no position for (created
 * while the client was away, or forgotten past `maxPatternTopics`) that already had messages;
 * delivery starts at `nextSeq`.
 */
export interface GapInfo {
  reason: GapReason;
  topic: string;
  /** The epoch of the last message delivered (null if none was). */
  epoch: string | null;
  /** The seq of the last message delivered (0 if none was). */
  lastSeq: number;
  /** `seq_jump`: the seq that arrived instead of `lastSeq + 1`; `untracked`: the first seq delivered. */
  nextSeq?: number;
}

/** The server confirmed a subscription (each connection, each resubscribe). */
export interface SubscribedInfo {
  topic: string;
  epoch: string;
  /** The topic's last seq when the subscription started. */
  seq: number;
  /** How many messages (up to `seq`) are replayed before live ones. */
  replayed: number;
  /** Set when a pattern subscription follows `topic`: the pattern. */
  pattern?: string;
}

/**
 * For a pattern subscription every handler is about one concrete topic (`meta.topic`,
 * `info.topic`), each topic with its own order, recovery and gaps.
 */
export interface SubscriptionHandlers {
  /** Every message of the topic, once, in order, across reconnects. */
  onMessage?(data: HeraldData, meta: MessageMeta): void;
  /** Messages were lost; reload the application's state for this topic. Never silent. */
  onGap?(info: GapInfo): void;
  /**
   * The server refused the topic (`forbidden`, `bad_topic`, `too_many_topics`, ...);
   * the subscription ended. For a pattern, an error with `error.topic` set refuses only that
   * topic (`too_many_topics`, `forbidden`: it is not followed) and the pattern goes on.
   */
  onError?(error: HeraldError): void;
  /** The server confirmed the subscription (again after every reconnect); for a pattern, once per topic it follows. */
  onSubscribed?(info: SubscribedInfo): void;
}

/** Where the first subscribe starts; later ones (after reconnects) always use `since`. */
export type SubscribeOptions = { since: HeraldPosition; rewind?: never } | { rewind: number; since?: never } | {};

/** A pattern: a topic with `*` (one whole segment) or a last `**` (one or more segments). */
export type TopicPattern = `${string}*${string}`;

/**
 * Where a pattern's first subscribe starts: positions per concrete topic (from
 * `PatternSubscription.positions()` of an earlier session), or live.
 */
export type PatternSubscribeOptions = { since?: Record<string, HeraldPosition> };

/**
 * The part of the WebSocket API the client relies on (browsers' `WebSocket` and `ws`'s fit);
 * it also sets `onopen`, `onmessage`, `onerror` and `onclose`.
 */
export interface WebSocketLike {
  readonly protocol: string;
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface HeraldOptions {
  /** WebSocket constructor; default `globalThis.WebSocket`. Node 20 needs one, e.g. `WebSocket` from `ws`. */
  WebSocket?: WebSocketConstructor;
  /** Called before every connection attempt; the token goes in the `bearer.<jwt>` subprotocol. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** First backoff cap and the jitter of immediate reconnects (1001, 1012, token expiry), ms. Default 500. */
  minDelay?: number;
  /** Largest backoff cap, ms. Default 30000. */
  maxDelay?: number;
  /** Backoff cap growth per failed attempt. Default 2. */
  factor?: number;
  /** A connection open this long (ms) resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Publishes held while disconnected or over `highWaterMark`; beyond, publish rejects with `queue_full`. Default 1000. */
  queueSize?: number;
  /** Socket `bufferedAmount` (bytes) above which publishes wait in the queue. Default 1 MiB. */
  highWaterMark?: number;
  /** Delay (ms) before asking again for a subscription refused as `unavailable` (cluster broker down). Default 1000. */
  retryUnavailable?: number;
  /**
   * Topics per pattern subscription whose positions go in its `since` map on a reconnect (the
   * most recently delivered first; the others are forgotten and reported `untracked` if they
   * had messages meanwhile). Default 1000, herald's default `--max-topics-per-conn`.
   */
  maxPatternTopics?: number;
}

export interface ConnectingEvent {
  attempt: number;
}
export interface OpenEvent {}
export interface ReconnectingEvent {
  /** Failed attempts since the last stable connection (1 for the first). */
  attempt: number;
  /** Milliseconds until the next attempt. */
  delay: number;
  /** The close code of the connection that ended (1006 when it never opened; 0 when getToken failed). */
  code: number;
  reason: string;
}
export interface ClosedEvent {
  code: number | string;
  reason: string;
}

export interface HeraldEvents {
  connecting: ConnectingEvent;
  open: OpenEvent;
  reconnecting: ReconnectingEvent;
  closed: ClosedEvent;
  /** Terminal: the client is closed after it (close 1003, 1008 other than token expiry, HTTP 401/403). */
  error: HeraldError;
}

/** An error from the server or the client; match on `code`. */
export class HeraldError extends Error {
  /**
   * A server error code (`forbidden`, `bad_topic`, `unavailable`, ...), a close code (1003,
   * 1008), an HTTP status at the upgrade (401, 403), or the client's own: `queue_full`,
   * `disconnected` (the connection dropped before the server answered), `closed`.
   */
  readonly code: string | number;
  readonly reason: string;
  /** For a pattern subscription's `onError`: the one topic refused (the pattern goes on). */
  readonly topic?: string;
  constructor(code: string | number, reason?: string, topic?: string);
}

/** One topic's subscription. */
export class Subscription {
  readonly topic: string;
  /** Epoch of the last delivered message, or null. */
  readonly epoch: string | null;
  /** Seq of the last delivered message (0: none). */
  readonly seq: number;
  /** False after unsubscribe() or a refusal. */
  readonly active: boolean;
  /** True while the server has confirmed the subscription on the current connection. */
  readonly live: boolean;
  /** Stop receiving the topic; no handler runs after it returns. */
  unsubscribe(): void;
}

/** A pattern's subscription: `topic` is the pattern; `epoch` and `seq` stay null and 0. */
export class PatternSubscription extends Subscription {
  /** The last delivered position of each topic followed; a later subscribe's `since`. */
  positions(): Record<string, HeraldPosition>;
}

/** A herald.v1 connection that reconnects and recovers by itself. */
export class Herald {
  constructor(url: string | (() => string), options?: HeraldOptions);
  readonly state: HeraldState;
  /** Socket bytes not yet sent plus queued publishes' bytes. */
  readonly bufferedAmount: number;
  on<K extends keyof HeraldEvents>(event: K, listener: (arg: HeraldEvents[K]) => void): () => void;
  /**
   * One topic, or (a `TopicPattern`) every topic the pattern matches, existing or created
   * later. A non-literal `string` is typed as a topic; at run time one holding a `*` is a
   * pattern all the same (the result is then a `PatternSubscription`).
   */
  subscribe<T extends string>(
    topic: T,
    handlers: SubscriptionHandlers | ((data: HeraldData, meta: MessageMeta) => void),
    options?: T extends TopicPattern ? PatternSubscribeOptions : SubscribeOptions,
  ): T extends TopicPattern ? PatternSubscription : Subscription;
  /** Resolves with the message's seq (`null`: nobody subscribed and history is off). */
  publish(topic: string, data: HeraldPayload): Promise<number | null>;
  /** Resolves once `bufferedAmount <= threshold` (default 0). */
  drained(threshold?: number): Promise<void>;
  close(code?: number, reason?: string): void;
}
