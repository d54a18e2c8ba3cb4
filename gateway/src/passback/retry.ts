import { and, eq, inArray } from "drizzle-orm";
import { type Principal, assertCourse } from "../auth/service-tokens.js";
import { database, nowIso } from "../db/client.js";
import type { Env } from "../env.js";
import { passbacks } from "../db/schema.js";
import { ApiError } from "../errors.js";
import { passbackOutbox } from "./outbox.js";
import { passbackView } from "./view.js";

/**
 * Sends a grade again now: for a dead passback after the LMS or the config was fixed. Staff only
 * for their own course (403 before anything changes); the admin API and the staff page share this.
 */
export async function retryPassback(env: Env, principal: Principal, id: number) {
  if (!Number.isSafeInteger(id) || id <= 0) throw new ApiError(404, "passback_not_retryable", "A passback id is a positive whole number.");
  const db = database(env.DB);
  const [existing] = await db.select({ course: passbacks.course }).from(passbacks).where(eq(passbacks.id, id)).limit(1);
  if (existing) assertCourse(principal, existing.course);
  const [row] = await db
    .update(passbacks)
    .set({ state: "pending", nextAttemptAt: Date.now(), updatedAt: nowIso() })
    .where(and(eq(passbacks.id, id), inArray(passbacks.state, ["dead", "retrying", "pending"])))
    .returning();
  if (!row) throw new ApiError(404, "passback_not_retryable", `No dead or retrying passback ${id}.`);
  await passbackOutbox(env).kick();
  return passbackView(row);
}
