import { shardOf } from "@otter-edge/shared";
import { nowIso } from "../db/client.js";
import type { Env } from "../env.js";
import { type GraderSettings, type JobSubmission, jobSpec } from "./job-spec.js";
import { dispatcherShard, shardCount } from "./stub.js";
import { logger } from "../log.js";

/** A row untouched this long while queued or leased is checked against its Dispatcher shard. */
export const STUCK_AFTER_MS = 10 * 60_000;
const BATCH = 500;

interface StuckRow extends JobSubmission, GraderSettings {
  submittedAutograder: string;
}

/**
 * The repair for what no single step can guarantee: a submission D1 says is queued or leased, but
 * that its Dispatcher shard does not hold (lost by an older gateway's requeue, a Durable Object
 * whose storage was reset, a bug). Each such row is queued again, with the assignment's current
 * autograder, and says so in its history. Rows the Dispatcher holds are left alone, however long
 * they have waited: a long queue is not a lost job. Runs from the Worker's cron trigger.
 */
export async function sweepLostJobs(env: Env, now = Date.now()): Promise<{ checked: number; requeued: string[] }> {
  const cutoff = new Date(now - STUCK_AFTER_MS).toISOString();
  const { results: rows } = await env.DB.prepare(
    `SELECT s.id, s.course, s.section, s.assignment, s.notebook_sha256 AS notebookSha256, s.notebook_bytes AS notebookBytes,
            s.autograder_sha256 AS submittedAutograder, a.autograder_sha256 AS autograderSha256, a.otter_version AS otterVersion,
            a.timeout_seconds AS timeoutSeconds, a.isolation
       FROM submissions s JOIN assignments a ON a.course = s.course AND a.assignment = s.assignment
      WHERE s.status IN ('queued', 'leased') AND s.updated_at < ?1
      ORDER BY s.updated_at LIMIT ?2`,
  )
    .bind(cutoff, BATCH)
    .all<StuckRow>();
  const shards = shardCount(env);
  const byShard = new Map<number, StuckRow[]>();
  for (const row of rows) {
    const shard = shardOf(row.id, shards);
    byShard.set(shard, [...(byShard.get(shard) ?? []), row]);
  }
  const requeued: string[] = [];
  for (const [shard, shardRows] of byShard) {
    const dispatcher = dispatcherShard(env, shard);
    const missing = new Set(await dispatcher.missing(shardRows.map((r) => r.id)));
    for (const row of shardRows.filter((r) => missing.has(r.id))) {
      const detail = `queued again by the sweeper: no grader held this job${row.submittedAutograder === row.autograderSha256 ? "" : " (graded with the assignment's current autograder)"}`;
      const at = nowIso();
      // Guarded: a job that finished meanwhile is not queued again.
      const [claimed] = await env.DB.batch([
        env.DB.prepare("UPDATE submissions SET status = 'queued', autograder_sha256 = ?2, updated_at = ?3 WHERE id = ?1 AND status IN ('queued', 'leased')").bind(row.id, row.autograderSha256, at),
        env.DB.prepare("INSERT INTO submission_events (submission_id, at, state, detail) SELECT ?1, ?2, 'requeued', ?3 WHERE changes() = 1").bind(row.id, at, detail),
      ]);
      if (!claimed?.meta.changes) continue;
      await dispatcher.enqueue(jobSpec(row, row));
      requeued.push(row.id);
    }
  }
  if (requeued.length > 0) logger("sweeper").warn("lost jobs queued again", { count: requeued.length, ids: requeued.slice(0, 20) });
  return { checked: rows.length, requeued };
}
