import type { EnvironmentPrepared, JobSpec } from "@otter-edge/shared";
import { nowIso } from "../db/client.js";

/**
 * Records on the assignment that its environment could not be installed, with pip's reason, for the
 * staff page. Only while the assignment still has that environment: a zip uploaded meanwhile wins.
 */
export async function markEnvironmentFailed(db: D1Database, job: Pick<JobSpec, "course" | "assignment">, environment: string, message: string): Promise<void> {
  await db
    .prepare(
      `UPDATE assignments SET environment_status = 'failed', environment_error = ?4, updated_at = ?5
         WHERE course = ?1 AND assignment = ?2 AND environment_hash = ?3`,
    )
    .bind(job.course, job.assignment, environment, message, nowIso())
    .run();
}

/** Records how a runner prepared the assignment's environment (built, with the end of pip's log, or pulled), for the staff page. */
export async function recordEnvironmentPrepared(db: D1Database, job: Pick<JobSpec, "course" | "assignment">, prepared: EnvironmentPrepared, runner: string): Promise<void> {
  const summary = `${prepared.how} on runner ${runner} in ${prepared.seconds.toFixed(1)} s`;
  await db
    .prepare(
      `UPDATE assignments SET environment_log = ?4, environment_prepared = ?5, environment_prepared_at = ?6
         WHERE course = ?1 AND assignment = ?2 AND environment_hash = ?3`,
    )
    .bind(job.course, job.assignment, prepared.hash, prepared.log, summary, nowIso())
    .run();
}
