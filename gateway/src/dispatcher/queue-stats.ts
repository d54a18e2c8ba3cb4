import type { Env } from "../env.js";
import { allDispatchers } from "./stub.js";

export interface RunnerView {
  runner: string;
  instance: string | null;
  capacity: number;
  /** All the runner's slots (its hello), when it said. */
  slots: number | null;
  holding: number;
  otterVersions: string[];
  lastSeenAt: string | null;
}

/** A runner as staff see it: one entry however many shards it is connected to. */
export type FleetRunner = Omit<RunnerView, "slots">;

interface ShardStats {
  pending: number;
  leased: number;
  /** Jobs parked until their assignment's environment can be installed (a new zip). */
  waitingForEnvironment: number;
  oldestEnqueuedAt: number | null;
  runners: RunnerView[];
}

export interface QueueStats extends Omit<ShardStats, "runners"> {
  runners: FleetRunner[];
}

/** The whole queue, summed over the Dispatcher's shards; a runner connected to every shard is listed once. */
export async function queueStats(env: Env): Promise<QueueStats> {
  const shards: ShardStats[] = await Promise.all(allDispatchers(env).map((d) => d.stats()));
  const oldest = shards.map((s) => s.oldestEnqueuedAt).filter((t): t is number => t !== null);
  return {
    pending: sum(shards.map((s) => s.pending)),
    leased: sum(shards.map((s) => s.leased)),
    waitingForEnvironment: sum(shards.map((s) => s.waitingForEnvironment)),
    oldestEnqueuedAt: oldest.length > 0 ? Math.min(...oldest) : null,
    runners: mergeRunners(shards.flatMap((s) => s.runners)),
  };
}

/**
 * One entry per runner instance. Each shard sees only the share of the runner's slots offered to it
 * (what it holds there plus the free slots promised to it), so the runner's capacity is the slot
 * count from its hello; a runner that sent none has one socket, whose capacity is its own.
 */
function mergeRunners(sockets: RunnerView[]): FleetRunner[] {
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
  const merged = [...byInstance.values()].map((views): FleetRunner => {
    // A draining runner offers 0 everywhere.
    const draining = views.every((v) => v.capacity === 0);
    const slots = Math.max(...views.map((v) => v.slots ?? v.capacity));
    const seen = views.map((v) => v.lastSeenAt).filter((t): t is string => t !== null).sort();
    const { runner, instance, otterVersions } = views[0]!;
    return { runner, instance, otterVersions, capacity: draining ? 0 : slots, holding: sum(views.map((v) => v.holding)), lastSeenAt: seen.at(-1) ?? null };
  });
  return [...merged, ...anonymous.map(({ slots: _, ...view }) => view)];
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
