import { DurableObject } from "cloudflare:workers";
import { and, asc, inArray, lte, min } from "drizzle-orm";
import { database } from "../db/client.js";
import { passbacks } from "../db/schema.js";
import type { Env } from "../env.js";
import { deliverPassback } from "./deliver.js";

const DUE_STATES = ["pending", "retrying"] as const;

/**
 * Drives the passback outbox. The outbox itself is in D1 (so staff see it and nothing is lost
 * with this object); this object only owns the alarm that wakes up when the next row is due, and
 * makes sure one delivery loop runs at a time. An alarm that throws is retried by the platform.
 */
export class PassbackOutbox extends DurableObject<Env> {
  private running: Promise<void> | null = null;
  private again = false;

  /** New or retried rows exist: look now. */
  async kick(): Promise<void> {
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

  private async drain(): Promise<void> {
    const db = database(this.env.DB);
    do {
      this.again = false;
      for (;;) {
        const due = await db
          .select()
          .from(passbacks)
          .where(and(inArray(passbacks.state, [...DUE_STATES]), lte(passbacks.nextAttemptAt, Date.now())))
          .orderBy(asc(passbacks.nextAttemptAt), asc(passbacks.id))
          .limit(20);
        if (due.length === 0) break;
        // In order, one at a time: the policy check of a later row must see an earlier one settled.
        for (const row of due) await deliverPassback(this.env, row);
      }
    } while (this.again);
    const [next] = await db.select({ at: min(passbacks.nextAttemptAt) }).from(passbacks).where(inArray(passbacks.state, [...DUE_STATES]));
    if (next?.at != null) await this.ctx.storage.setAlarm(Math.max(next.at, Date.now()));
  }
}

export function passbackOutbox(env: Env) {
  return env.PASSBACK.get(env.PASSBACK.idFromName("global"));
}
