/**
 * Small helpers shared by the benchmarks: percentiles, plain-text tables, CPU accounting of a
 * process group from /proc, and writing a run's figures to bench/results/ (gitignored).
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { ROOT } from "../scripts/local-stack.js";

export const RESULTS_DIR = join(ROOT, "bench", "results");

/** Nearest-rank percentile of an ascending-sorted array (NaN when empty). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

export function summarize(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, min: s[0] ?? Number.NaN, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s[s.length - 1] ?? Number.NaN };
}

export const fmt = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "-");

/** A left-aligned first column, right-aligned numbers. */
export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(cells[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

export function machine() {
  return { cores: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, cpu: cpus()[0]?.model ?? "unknown", loadavg: readFileSync("/proc/loadavg", "utf8").trim() };
}

export async function writeResults(name: string, data: unknown): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  await writeFile(file, JSON.stringify(data, null, 2) + "\n");
  return file;
}

const TICK_MS = 10; // CLK_TCK is 100 on Linux x86-64

/**
 * CPU time (user + system, ms) used so far by every live process in a process group, by command
 * name. startGateway/startRunner spawn detached children, so the group is the child's pid and
 * holds wrangler (node) and workerd.
 */
export function groupCpuMs(pgid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(")");
    const comm = stat.slice(stat.indexOf("(") + 1, close);
    const fields = stat.slice(close + 2).split(" ");
    // fields[0] is state (field 3); pgrp is field 5, utime 14, stime 15.
    if (Number(fields[2]) !== pgid) continue;
    const ms = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
    out[comm] = (out[comm] ?? 0) + ms;
  }
  return out;
}

export function diffCpu(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) out[k] = v - (before[k] ?? 0);
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * CPU time (ms) of every thread of the processes in a process group whose command is `comm`, by
 * thread id. Shows whether one thread is the ceiling: workerd runs a Worker's JavaScript, its
 * Durable Objects and local D1/R2 on one thread per process.
 */
export function threadCpuMs(pgid: number, comm: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = parseStat(`/proc/${entry}/stat`);
    if (!stat || stat.comm !== comm || stat.pgrp !== pgid) continue;
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${entry}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      const t = parseStat(`/proc/${entry}/task/${tid}/stat`);
      if (t) out[tid] = t.cpuMs;
    }
  }
  return out;
}

function parseStat(path: string): { comm: string; pgrp: number; cpuMs: number } | null {
  let stat: string;
  try {
    stat = readFileSync(path, "utf8");
  } catch {
    return null;
  }
  const close = stat.lastIndexOf(")");
  const fields = stat.slice(close + 2).split(" ");
  return { comm: stat.slice(stat.indexOf("(") + 1, close), pgrp: Number(fields[2]), cpuMs: (Number(fields[11]) + Number(fields[12])) * TICK_MS };
}

/**
 * GETs JSON, sending the request again when no answer comes within `timeoutMs`; throws on a non-2xx
 * answer, or when `attempts` sends all failed. Only for requests that are safe to repeat.
 *
 * Why: under `wrangler dev` a request can be lost between wrangler's proxy and workerd. While the
 * Dispatcher drains a long queue, workerd's one event loop never stops to poll its sockets (7–8 s
 * with 1,000 jobs here). A request the proxy writes meanwhile on a keep-alive connection is dropped
 * when workerd gets back to it: the connection's 5 s idle timeout, expired in the meantime, fires
 * first and workerd closes it. wrangler 4.86's proxy then takes the failure for a worker reload
 * and parks the GET until another request arrives, so a poller that waits for each answer waits
 * for undici's 300 s. Sending again is that other request: it is answered, and frees the parked one.
 */
export async function getJson<T>(
  url: string,
  headers: Record<string, string>,
  opts: { timeoutMs?: number; attempts?: number; onRetry?: (attempt: number, error: unknown) => void } = {},
): Promise<T> {
  const { timeoutMs = 3_000, attempts = 20 } = opts;
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    let text: string;
    try {
      // The body is read under the same deadline: a response can stall after its headers as well.
      res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
      text = await res.text();
    } catch (err) {
      if (attempt >= attempts) throw err;
      opts.onRetry?.(attempt, err);
      continue;
    }
    if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }
}
