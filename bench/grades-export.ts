/**
 * `npx tsx bench/grades-export.ts [ROWS...]` (default 10000 100000): times the staff API's grade
 * export (`GET /api/v1/staff/courses/:course/grades.csv`) against a gateway under `wrangler dev`,
 * and samples the resident memory of its workerd process while the CSV streams, so a larger course
 * shows whether memory grows with the row count. Also times `otter-edge grades export --local`.
 */
import { readFileSync, readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, newCredentials, run, startGateway } from "../scripts/local-stack.js";
import { fmt, machine, table } from "./lib.js";

const WRANGLER = join(ROOT, "node_modules", ".bin", "wrangler");
const TSX = join(ROOT, "node_modules", ".bin", "tsx");

/** workerd processes in the process group wrangler dev leads. */
function workerdPids(pgid: number): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return Number(fields[2]) === pgid && readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "workerd";
      } catch {
        return false;
      }
    })
    .map(Number);
}

const rssKiB = (pids: number[]) =>
  pids.reduce((sum, pid) => {
    try {
      return sum + Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      return sum;
    }
  }, 0);

const lit = (s: string) => `'${s.replaceAll("'", "''")}'`;

async function seed(stateDir: string, work: string, course: string, rows: number) {
  const statements: string[] = [];
  for (let start = 0; start < rows; start += 200) {
    const values: string[] = [];
    for (let i = start; i < Math.min(rows, start + 200); i += 1) {
      const t = new Date(Date.UTC(2026, 2, 1) + i * 1000).toISOString();
      values.push(`(${lit(`${course}-${i}`)}, ${lit(`student-${i % 997}`)}, ${lit(course)}, '1', ${lit(`lab${i % 10}`)}, 'nb', 1, 'ag', 'graded', ${(i % 1000) / 1000}, ${lit(t)}, ${lit(t)}, ${lit(t)})`);
    }
    statements.push(`INSERT INTO submissions (id, user, course, section, assignment, notebook_sha256, notebook_bytes, autograder_sha256, status, score, created_at, finished_at, updated_at) VALUES ${values.join(",")};`);
  }
  statements.push(`INSERT INTO passbacks (submission_id, course, section, assignment, user, state, attempts, created_at, updated_at) SELECT id, course, section, assignment, user, 'delivered', 1, created_at, created_at FROM submissions WHERE course = ${lit(course)};`);
  const file = join(work, `${course}.sql`);
  await writeFile(file, statements.join("\n"));
  await run(WRANGLER, ["d1", "execute", "DB", "--local", "--persist-to", stateDir, "--file", file]);
}

async function main() {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-export-"));
  const credentials = newCredentials([]);
  const gateway = await startGateway({ stateDir: join(work, "state"), credentials });
  const results: Array<Record<string, number>> = [];
  try {
    const pids = workerdPids(gateway.process.pid!);
    for (const rows of sizes.length ? sizes : [10_000, 100_000]) {
      const course = `bench${rows}`;
      await seed(gateway.stateDir, work, course, rows);
      for (let repeat = 0; repeat < 3; repeat += 1) {
        const baseline = rssKiB(pids);
        let peak = baseline;
        const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(pids))), 5);
        const started = performance.now();
        const res = await fetch(`${gateway.url}/api/v1/staff/courses/${course}/grades.csv`, { headers: { authorization: `Bearer ${credentials.admin}` } });
        let firstByteMs = 0;
        let bytes = 0;
        let lines = 0;
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          if (!firstByteMs) firstByteMs = performance.now() - started;
          bytes += chunk.byteLength;
          for (const b of chunk) if (b === 10) lines += 1;
        }
        const totalMs = performance.now() - started;
        clearInterval(sampler);
        if (lines !== rows + 1) throw new Error(`expected ${rows + 1} lines, got ${lines}`);
        results.push({ rows, repeat, firstByteMs, totalMs, bytes, baselineMiB: baseline / 1024, peakMiB: peak / 1024, deltaMiB: (peak - baseline) / 1024 });
      }
      const cliStarted = performance.now();
      await run(TSX, [join(ROOT, "gateway", "cli", "otter-edge.ts"), "grades", "export", "--course", course, "--local", "--persist-to", gateway.stateDir, "--out", join(work, `${course}.csv`)]);
      results.push({ rows, repeat: -1, totalMs: performance.now() - cliStarted, firstByteMs: Number.NaN, bytes: Number.NaN, baselineMiB: Number.NaN, peakMiB: Number.NaN, deltaMiB: Number.NaN });
    }
  } finally {
    await gateway.stop();
    await rm(work, { recursive: true, force: true });
  }
  console.log(JSON.stringify(machine()));
  console.log(
    table(
      ["rows", "run", "first byte ms", "total ms", "MB", "workerd RSS before MiB", "peak MiB", "delta MiB"],
      results.map((r) => [r.rows!, r.repeat === -1 ? "cli --local" : `api #${r.repeat! + 1}`, fmt(r.firstByteMs!), fmt(r.totalMs!), fmt(r.bytes! / 1e6, 2), fmt(r.baselineMiB!), fmt(r.peakMiB!), fmt(r.deltaMiB!)]),
    ),
  );
}

await main();
