/**
 * V8's CPU profiler on a running workerd, over the DevTools protocol of its inspector port: where
 * the gateway's JavaScript spends its time per submission (bench:intake with BENCH_PROFILE).
 *
 * Inside a Worker, clocks stand still between I/O (a Spectre mitigation), so the code cannot time its
 * own CPU-bound steps; a sampling profile can. Self time is grouped by where the function lives
 * (our modules by file, libraries by package) and by function, so that a cut can be aimed and then
 * checked in the same bench.
 */
import WebSocket from "ws";
import { writeFile } from "node:fs/promises";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export class CpuProfiler {
  private nextId = 1;
  private pending = new Map<number, (result: unknown) => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: unknown };
      if (msg.id !== undefined) this.pending.get(msg.id)?.(msg.error ? Promise.reject(new Error(JSON.stringify(msg.error))) : msg.result);
    });
  }

  /** Attaches to the isolate whose inspector target is named after `worker` (Miniflare names them `core:user:<worker>`). */
  static async attach(inspectorPort: number, worker: string): Promise<CpuProfiler> {
    const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json()) as Array<{ title: string; webSocketDebuggerUrl: string }>;
    const target = targets.find((t) => t.title.includes(worker)) ?? targets[0];
    if (!target) throw new Error(`no inspector target on port ${inspectorPort}`);
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    const profiler = new CpuProfiler(socket);
    await profiler.send("Profiler.enable");
    // 100 µs: fine enough for steps that cost a fraction of a millisecond per submission.
    await profiler.send("Profiler.setSamplingInterval", { interval: 100 });
    return profiler;
  }

  private send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  start(): Promise<unknown> {
    return this.send("Profiler.start");
  }

  async stop(): Promise<Profile> {
    return ((await this.send("Profiler.stop")) as { profile: Profile }).profile;
  }

  close(): void {
    this.socket.close();
  }
}

/** Where a function lives: our own source file, a library's package, or the runtime. */
function place(url: string, functionName: string): string {
  if (!url) return functionName.startsWith("(") ? functionName : "(runtime)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const own = /(gateway|shared)\/src\/(.+)$/.exec(url);
  return own ? `${own[1]}/${own[2]}` : url.replace(/^.*\//, "");
}

export interface ProfileSummary {
  totalMs: number;
  byPlace: Array<{ place: string; ms: number }>;
  byFunction: Array<{ fn: string; ms: number }>;
}

/** Self time by place and by function. Bundled code keeps its source paths through the source map only, so callers pass `resolve`. */
export function summarizeProfile(profile: Profile, resolve: (frame: ProfileNode["callFrame"]) => { url: string; name: string } = (f) => ({ url: f.url, name: f.functionName })): ProfileSummary {
  const selfUs = new Map<number, number>();
  profile.samples.forEach((node, i) => selfUs.set(node, (selfUs.get(node) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byPlace = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (!us) continue;
    const { url, name } = resolve(node.callFrame);
    if (name === "(idle)") continue;
    total += us;
    const where = place(url, name);
    byPlace.set(where, (byPlace.get(where) ?? 0) + us);
    const fn = `${name || "(anonymous)"} ${where}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  }
  const sorted = <K extends string>(m: Map<string, number>, key: K) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, us]) => ({ [key]: k, ms: us / 1000 }) as { [P in K]: string } & { ms: number });
  return { totalMs: total / 1000, byPlace: sorted(byPlace, "place"), byFunction: sorted(byFunction, "fn") };
}

export async function saveProfile(file: string, profile: Profile): Promise<void> {
  await writeFile(file, JSON.stringify(profile));
}
