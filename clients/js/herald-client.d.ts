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

/** Why `onGap` was called. */
export type GapReason = "epoch_changed" | "history_gap" | "since_ahead" | "seq_jump";

/**
 * Messages were lost between `lastSeq` and what comes next: the client cannot recover them.
 * After `epoch_changed`, `history_gap` and `since_ahead` the subscription resumes live from the
 * server's current position; after `seq_jump` delivery goes on from `nextSeq`.
 */
export interface GapInfo {
  reason: GapReason;
  topic: string;
  /** The epoch of the last message delivered (null if none was). */
  epoch: string | null;
  /** The seq of the last message delivered (0 if none was). */
  lastSeq: number;
  /** `seq_jump` only: the seq that arrived instead of `lastSeq + 1`. */
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
}

export interface SubscriptionHandlers {
  /** Every message of the topic, once, in order, across reconnects. */
  onMessage?(data: HeraldData, meta: MessageMeta): void;
  /** Messages were lost; reload the application's state for this topic. Never silent. */
  onGap?(info: GapInfo): void;
  /** The server refused the topic (`forbidden`, `bad_topic`, `too_many_topics`); the subscription ended. */
  onError?(error: HeraldError): void;
  /** The server confirmed the subscription (again after every reconnect). */
  onSubscribed?(info: SubscribedInfo): void;
}

/** Where the first subscribe starts; later ones (after reconnects) always use `since`. */
export type SubscribeOptions = { since: HeraldPosition; rewind?: never } | { rewind: number; since?: never } | {};

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
  constructor(code: string | number, reason?: string);
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
  /** Stop receiving the topic; no handler runs after it returns. */
  unsubscribe(): void;
}

/** A herald.v1 connection that reconnects and recovers by itself. */
export class Herald {
  constructor(url: string | (() => string), options?: HeraldOptions);
  readonly state: HeraldState;
  /** Socket bytes not yet sent plus queued publishes' bytes. */
  readonly bufferedAmount: number;
  on<K extends keyof HeraldEvents>(event: K, listener: (arg: HeraldEvents[K]) => void): () => void;
  subscribe(topic: string, handlers: SubscriptionHandlers | ((data: HeraldData, meta: MessageMeta) => void), options?: SubscribeOptions): Subscription;
  /** Resolves with the message's seq (`null`: nobody subscribed and history is off). */
  publish(topic: string, data: HeraldPayload): Promise<number | null>;
  /** Resolves once `bufferedAmount <= threshold` (default 0). */
  drained(threshold?: number): Promise<void>;
  close(code?: number, reason?: string): void;
}
