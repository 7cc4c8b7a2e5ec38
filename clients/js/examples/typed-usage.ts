// A typed use of herald-client, compiled (not run) by `tsc --noEmit` in CI so the
// declarations stay usable. Node 20: the WebSocket constructor comes from `ws`.
import { WebSocket } from "ws";
import { Herald, HeraldError, type GapInfo, type MessageMeta, type PatternSubscription, type Subscription } from "herald-client";

const herald = new Herald("ws://127.0.0.1:9000/", {
  WebSocket,
  getToken: async () => process.env.HERALD_TOKEN ?? null,
  minDelay: 500,
  maxDelay: 30_000,
  factor: 2,
  queueSize: 100,
});

herald.on("reconnecting", ({ attempt, delay, code }) => console.log(`retry ${attempt} in ${delay} ms after ${code}`));
herald.on("error", (e: HeraldError) => console.error("terminal", e.code, e.reason));
const off = herald.on("open", () => console.log("open"));
off();

const prices: Subscription = herald.subscribe(
  "prices/BTC",
  {
    onMessage(data, meta: MessageMeta) {
      const text: string = typeof data === "string" ? data : new TextDecoder().decode(data);
      console.log(meta.topic, meta.epoch, meta.seq, text);
    },
    onGap(gap: GapInfo) {
      console.warn(`lost messages after ${gap.lastSeq} of ${gap.topic}: ${gap.reason}`);
    },
    onError(e) {
      console.error(e.code);
    },
  },
  { rewind: 10 },
);

herald.subscribe("orders", (data, { seq }) => console.log(seq, data), { since: { epoch: "5f3a9c1e.0.7", seq: 1041 } });

// A pattern: every topic under feed/, each resumed from the positions a previous session stored.
const stored: Record<string, { epoch: string; seq: number }> = JSON.parse(process.env.FEED_POSITIONS ?? "{}");
const feed: PatternSubscription = herald.subscribe(
  "feed/**",
  {
    onMessage: (data, { topic, seq }) => console.log(topic, seq, data),
    onGap: ({ topic, reason }) => console.warn(`reload ${topic}: ${reason}`),
    onError: (e) => console.error(e.topic ?? "the pattern", e.code),
    onSubscribed: ({ topic, pattern, replayed }) => console.log(`${pattern} follows ${topic}, ${replayed} replayed`),
  },
  { since: stored },
);

async function publisher(): Promise<void> {
  try {
    const seq: number | null = await herald.publish("chat", "hello");
    await herald.publish("chat", new Uint8Array([1, 2, 3]));
    if (herald.bufferedAmount > 1 << 20) await herald.drained(1 << 16);
    console.log(seq, prices.seq, herald.state);
  } catch (e) {
    if (e instanceof HeraldError && e.code === "queue_full") console.warn("slow down");
  }
  process.env.FEED_POSITIONS = JSON.stringify(feed.positions());
  console.log(feed.live, feed.topic);
  feed.unsubscribe();
  prices.unsubscribe();
  herald.close();
}
void publisher();
