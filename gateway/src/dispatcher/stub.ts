import { type JobSpec, MAX_SHARDS, shardOf } from "@otter-edge/shared";
import { type Env, intSetting } from "../env.js";

/**
 * The Dispatcher is split into `DISPATCHER_SHARDS` objects (1 unless configured): one Durable Object
 * is single-threaded, so one object for every course caps intake, leasing and results together.
 * A job lives in the shard its submission id hashes to, so every submission spreads evenly, even
 * within one course; a runner holds a socket to every shard and promises each free slot to one shard
 * at a time (runner/src/slot-offers.ts).
 *
 * The count may be raised, never lowered while jobs wait: a job stays in the shard it was queued in,
 * and runners only connect to shards below the current count.
 */
export function shardCount(env: Pick<Env, "DISPATCHER_SHARDS">): number {
  return Math.min(intSetting(env.DISPATCHER_SHARDS, 1), MAX_SHARDS);
}

/** Shard 0 keeps the name of the single Dispatcher that came before sharding, and with it its queue. */
export function dispatcherShard(env: Env, shard: number) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(shard === 0 ? "global" : `shard-${shard}`));
}

export function dispatcherForJob(env: Env, submissionId: string) {
  return dispatcherShard(env, shardOf(submissionId, shardCount(env)));
}

export function allDispatchers(env: Env) {
  return Array.from({ length: shardCount(env) }, (_, shard) => dispatcherShard(env, shard));
}

/** Groups jobs by the shard each belongs to. */
export function jobsByShard(env: Env, jobs: JobSpec[]): Map<number, JobSpec[]> {
  const shards = shardCount(env);
  const groups = new Map<number, JobSpec[]>();
  for (const job of jobs) {
    const shard = shardOf(job.submissionId, shards);
    const group = groups.get(shard);
    if (group) group.push(job);
    else groups.set(shard, [job]);
  }
  return groups;
}
