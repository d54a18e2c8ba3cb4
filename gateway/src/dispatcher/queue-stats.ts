import type { Env } from "../env.js";
import { allDispatchers } from "./stub.js";

export interface RunnerView {
  runner: string;
  instance: string | null;
  capacity: number;
  holding: number;
  otterVersions: string[];
  lastSeenAt: string | null;
}

export interface QueueStats {
  pending: number;
  leased: number;
  oldestEnqueuedAt: number | null;
  runners: RunnerView[];
}

/** The whole queue, summed over the Dispatcher's shards; a runner connected to every shard is listed once. */
export async function queueStats(env: Env): Promise<QueueStats> {
  const shards: QueueStats[] = await Promise.all(allDispatchers(env).map((d) => d.stats()));
  const oldest = shards.map((s) => s.oldestEnqueuedAt).filter((t): t is number => t !== null);
  return {
    pending: sum(shards.map((s) => s.pending)),
    leased: sum(shards.map((s) => s.leased)),
    oldestEnqueuedAt: oldest.length > 0 ? Math.min(...oldest) : null,
    runners: mergeRunners(shards.flatMap((s) => s.runners)),
  };
}

/**
 * One entry per runner instance. Each shard sees the runner's free slots plus what it holds there
 * (see the runner's `ready`), so the runner's capacity is what all shards hold plus those free slots.
 */
function mergeRunners(sockets: RunnerView[]): RunnerView[] {
  const byInstance = new Map<string, RunnerView[]>();
  const anonymous: RunnerView[] = [];
  for (const socket of sockets) {
    // A socket that has not said hello yet has no instance name to match on.
    if (socket.instance === null) {
      anonymous.push(socket);
      continue;
    }
    const key = `${socket.runner}\u0000${socket.instance}`;
    const views = byInstance.get(key);
    if (views) views.push(socket);
    else byInstance.set(key, [socket]);
  }
  const merged = [...byInstance.values()].map((views) => {
    const holding = sum(views.map((v) => v.holding));
    // A draining runner offers 0 everywhere.
    const draining = views.every((v) => v.capacity === 0);
    const free = Math.max(0, ...views.map((v) => v.capacity - v.holding));
    const seen = views.map((v) => v.lastSeenAt).filter((t): t is string => t !== null).sort();
    return { ...views[0]!, capacity: draining ? 0 : holding + free, holding, lastSeenAt: seen.at(-1) ?? null };
  });
  return [...merged, ...anonymous];
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
