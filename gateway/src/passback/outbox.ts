import { DurableObject } from "cloudflare:workers";
import { and, asc, inArray, lte, min } from "drizzle-orm";
import { database } from "../db/client.js";
import { passbacks } from "../db/schema.js";
import { type Env, intSetting } from "../env.js";
import { deliverPassback } from "./deliver.js";
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
   * everyone else's grade. Rows of a student already being served wait for the next look.
   */
  private async drain(): Promise<void> {
    const db = database(this.env.DB);
    const concurrency = intSetting(this.env.PASSBACK_CONCURRENCY, 8);
    const busy = new Map<string, Promise<void>>();
    // Students whose delivery threw (D1 trouble, not an LMS answer): not served again in this drain;
    // the alarm then throws, and the platform retries it with backoff instead of this loop spinning.
    const failed = new Set<string>();
    do {
      this.again = false;
      for (;;) {
        const due = await db
          .select()
          .from(passbacks)
          .where(and(inArray(passbacks.state, [...DUE_STATES]), lte(passbacks.nextAttemptAt, Date.now())))
          .orderBy(asc(passbacks.nextAttemptAt), asc(passbacks.id))
          .limit(200);
        const waiting = groupByStudent(due.filter((row) => !busy.has(studentKey(row)) && !failed.has(studentKey(row))));
        if (waiting.size === 0) {
          if (busy.size === 0) break;
          // Everything due belongs to students being served: look again when one of them is done, or new rows come.
          await Promise.race([...busy.values(), new Promise<void>((resolve) => (this.wake = resolve))]);
          this.wake = null;
          continue;
        }
        for (const [key, rows] of waiting) {
          while (busy.size >= concurrency) await Promise.race(busy.values());
          const serving = (async () => {
            for (const row of rows) {
              try {
                await deliverPassback(this.env, row);
              } catch (err) {
                failed.add(key);
                log.error("passback delivery failed", { passbackId: row.id, error: String(err) });
                return; // the student's later rows wait: their policy check needs this one settled
              }
            }
          })().finally(() => busy.delete(key));
          busy.set(key, serving);
        }
      }
    } while (this.again);
    if (failed.size > 0) throw new Error(`${failed.size} passback deliveries failed; the alarm will be retried`);
    const [next] = await db.select({ at: min(passbacks.nextAttemptAt) }).from(passbacks).where(inArray(passbacks.state, [...DUE_STATES]));
    if (next?.at != null) await this.ctx.storage.setAlarm(Math.max(next.at, Date.now()));
  }
}

const studentKey = (row: { course: string; assignment: string; user: string }) => JSON.stringify([row.course, row.assignment, row.user]);

/** Rows by student, each student's in the order given. */
function groupByStudent<T extends { course: string; assignment: string; user: string }>(rows: T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const row of rows) {
    const key = studentKey(row);
    const group = groups.get(key);
    if (group) group.push(row);
    else groups.set(key, [row]);
  }
  return groups;
}

export function passbackOutbox(env: Env) {
  return env.PASSBACK.get(env.PASSBACK.idFromName("global"));
}
