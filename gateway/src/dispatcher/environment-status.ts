import type { JobSpec } from "@otter-edge/shared";
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
