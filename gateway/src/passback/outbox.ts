import { DurableObject } from "cloudflare:workers";
import { and, asc, gt, inArray, lte, min } from "drizzle-orm";
import { type Database, database } from "../db/client.js";
import { passbacks } from "../db/schema.js";
import { type Env, intSetting } from "../env.js";
import { type PassbackRow, deliverPassback } from "./deliver.js";
import { log } from "../log.js";

const DUE_STATES = ["pending", "retrying"] as const;

/**
 * Drives the passback outbox. The outbox itself is in D1 (so staff see it and nothing is lost
 * with this object); this object only owns the alarm that wakes up when the next row is due, and
 * makes sure one delivery loop runs at a time. An alarm that throws is retried by the platform.
 */
export class PassbackOutbox extends DurableObject<Env> {
  private running: Promise<void> | null = null;
  private again = false;

  /** Wakes a drain that waits for a busy student while new rows may have arrived. */
  private wake: (() => void) | null = null;

  /** New or retried rows exist: look now. */
  async kick(): Promise<void> {
    if (this.running) {
      // A drain is under way (an alarm runs alone): tell it to look again instead of queueing an alarm behind it.
      this.again = true;
      this.wake?.();
      return;
    }
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > Date.now()) await this.ctx.storage.setAlarm(Date.now());
  }

  override async alarm(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.drain().finally(() => (this.running = null));
    return this.running;
  }

  /**
   * Delivers due rows until none is left. Students are served side by side (up to PASSBACK_CONCURRENCY
   * at once) and each student's rows one after the other, oldest first: the policy check of a
   * student's later row must see their earlier one settled, but one slow LMS answer must not hold up
   * everyone else's grade.
   *
   * D1 is read only when something may have changed: once at the start, for rows newer than any
   * already taken when a kick says new rows exist (when a slot is free), and again
   * for everything due once every row taken is settled. (It used to read the whole due page after every delivery: with a backlog that is 200
   * rows read per grade posted, most of the passback's cost in bench:intake.)
   */
  private async drain(): Promise<void> {
    const db = database(this.env.DB);
    const concurrency = intSetting(this.env.PASSBACK_CONCURRENCY, 8);
    const waiting = new Map<string, PassbackRow[]>();
    const serving = new Map<string, Promise<void>>();
    // Students whose delivery threw (D1 trouble, not an LMS answer): not served again in this drain;
    // the alarm then throws, and the platform retries it with backoff instead of this loop spinning.
    const failed = new Set<string>();
    let newestTaken = 0;
    const take = (rows: PassbackRow[]): number => {
      let taken = 0;
      for (const row of rows) {
        const key = studentKey(row);
        newestTaken = Math.max(newestTaken, row.id);
        if (failed.has(key)) continue;
        const queue = waiting.get(key);
        if (queue?.some((r) => r.id === row.id)) continue;
        if (queue) queue.push(row);
        else waiting.set(key, [row]);
        taken += 1;
      }
      return taken;
    };
    const serve = async (key: string) => {
      for (let row = waiting.get(key)?.shift(); row; row = waiting.get(key)?.shift()) {
        try {
          await deliverPassback(this.env, row);
        } catch (err) {
          failed.add(key);
          waiting.delete(key); // the student's later rows wait: their policy check needs this one settled
          log.error("passback delivery failed", { passbackId: row.id, error: String(err) });
          return;
        }
      }
      waiting.delete(key);
    };

    this.again = false;
    take(await dueRows(db));
    for (;;) {
      for (const key of waiting.keys()) {
        if (serving.size >= concurrency) break;
        if (!serving.has(key)) serving.set(key, serve(key).finally(() => serving.delete(key)));
      }
      if (serving.size === 0) {
        // Every row taken is settled: look for anything due (rows that came due meanwhile, or beyond the page).
        this.again = false;
        if (take(await dueRows(db)) === 0) break;
        continue;
      }
      await Promise.race([...serving.values(), new Promise<void>((resolve) => (this.wake = resolve))]);
      this.wake = null;
      // New rows exist: read them when a slot is free to serve them (every row taken that could start
      // has started), so that the kicks of a burst of grades are read together, not one read per grade.
      if (this.again && serving.size < concurrency) {
        this.again = false;
        take(await dueRows(db, newestTaken));
      }
    }
    if (failed.size > 0) throw new Error(`${failed.size} passback deliveries failed; the alarm will be retried`);
    const [next] = await db.select({ at: min(passbacks.nextAttemptAt) }).from(passbacks).where(inArray(passbacks.state, [...DUE_STATES]));
    if (next?.at != null) await this.ctx.storage.setAlarm(Math.max(next.at, Date.now()));
  }
}

/** Rows due now, oldest first; `afterId`: only rows newer than that (new since the last look). */
function dueRows(db: Database, afterId = 0): Promise<PassbackRow[]> {
  return db
    .select()
    .from(passbacks)
    .where(and(inArray(passbacks.state, [...DUE_STATES]), lte(passbacks.nextAttemptAt, Date.now()), gt(passbacks.id, afterId)))
    .orderBy(asc(passbacks.nextAttemptAt), asc(passbacks.id))
    .limit(200);
}

const studentKey = (row: { course: string; assignment: string; user: string }) => JSON.stringify([row.course, row.assignment, row.user]);

export function passbackOutbox(env: Env) {
  return env.PASSBACK.get(env.PASSBACK.idFromName("global"));
}
