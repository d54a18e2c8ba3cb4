import { and, desc, eq } from "drizzle-orm";
import { database, nowIso } from "../db/client.js";
import { passbacks } from "../db/schema.js";
import type { Env } from "../env.js";
import { policyChoice } from "./deliver.js";
import { sectionAssignmentConfig } from "./target.js";

/**
 * After a student's recorded scores changed outside intake (a regrade), queues the grade the course's
 * policy now picks, but only when the LMS does not already hold that score: a regrade that changes
 * nothing the student sees posts nothing. Returns whether a passback was queued.
 *
 * The chosen submission's outbox row is reused (one row per submission): it goes back to `pending`
 * with a fresh retry window, and delivery reads the score at send time as always.
 */
export async function repostPolicyGrade(env: Env, student: { course: string; section: string; assignment: string; user: string }): Promise<boolean> {
  const db = database(env.DB);
  const config = await sectionAssignmentConfig(db, student);
  const chosen = await policyChoice(db, student, config?.policy ?? "latest");
  if (!chosen) return false;
  const mine = and(eq(passbacks.course, student.course), eq(passbacks.assignment, student.assignment), eq(passbacks.user, student.user));
  const [lastDelivered] = await db
    .select({ score: passbacks.postedScore })
    .from(passbacks)
    .where(and(mine, eq(passbacks.state, "delivered")))
    .orderBy(desc(passbacks.deliveredAt), desc(passbacks.id))
    .limit(1);
  if (lastDelivered && lastDelivered.score === chosen.score) return false;
  const now = nowIso();
  await db
    .insert(passbacks)
    .values({ submissionId: chosen.id, ...student, state: "pending", attempts: 0, nextAttemptAt: Date.now(), createdAt: now, updatedAt: now })
    .onConflictDoUpdate({
      target: passbacks.submissionId,
      set: { state: "pending", attempts: 0, nextAttemptAt: Date.now(), lastError: null, deliveredAt: null, createdAt: now, updatedAt: now },
    });
  return true;
}
