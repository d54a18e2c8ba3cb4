/**
 * `otter-edge grades export`: a course's grades as CSV, from one of three sources, all through the
 * same SQL and CSV code (gateway/src/export/grades.ts):
 *   - the staff API of a gateway (default; an admin or the course's staff token),
 *   - `--local`: the wrangler dev local D1 (`wrangler d1 execute DB --local [--persist-to DIR]`),
 *   - `--remote`: the deployed D1 (`wrangler d1 execute DB --remote`, needs a Cloudflare login).
 */
import { execFile } from "node:child_process";
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type GradeExportFilters, type GradeRow, type PageRunner, type SqlQuery, gradesCsvPages, inlineSql, parseGradeExportFilters } from "../src/export/grades.js";
import type { AdminClient } from "./admin-client.js";

/** The repository root, where wrangler.toml names the D1 binding `DB`. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Rows per `wrangler d1 execute` call: each call costs a wrangler start (about a second), so pages are larger than the API's. */
export const D1_CLI_PAGE_SIZE = 5000;

export interface GradesExportOptions {
  course?: string;
  section?: string;
  assignment?: string;
  since?: string;
  until?: string;
  policy?: string;
  out?: string;
  local?: boolean;
  remote?: boolean;
  persistTo?: string;
  pageSize?: number;
}

/** Runs page queries with `npx wrangler d1 execute DB --local|--remote --json --command <SQL>` (parameters written in as literals). */
export function wranglerPageRunner(target: { local: true; persistTo?: string } | { remote: true }): PageRunner {
  return async (query: SqlQuery) => {
    const args = ["wrangler", "d1", "execute", "DB", "--json", "--command", inlineSql(query)];
    if ("remote" in target) args.push("--remote");
    else {
      args.push("--local");
      if (target.persistTo) args.push("--persist-to", resolve(target.persistTo));
    }
    let stdout: string;
    try {
      ({ stdout } = await promisify(execFile)("npx", args, {
        cwd: ROOT,
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_UPDATE_NOTIFIER: "1" },
        maxBuffer: 256 * 1024 * 1024,
      }));
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      let detail = `${e.stderr ?? ""}${e.stdout ?? ""}`.trim() || e.message;
      try {
        detail = (JSON.parse(e.stdout ?? "") as { error?: { text?: string } }).error?.text ?? detail;
      } catch {
        // not JSON: keep the raw output
      }
      throw new Error(`wrangler d1 execute failed: ${detail.slice(-2000)}`);
    }
    const parsed = JSON.parse(stdout) as Array<{ results?: GradeRow[]; success?: boolean }>;
    const results = parsed[0]?.results;
    if (!Array.isArray(results)) throw new Error(`wrangler d1 execute: unexpected output ${stdout.slice(0, 500)}`);
    return results;
  };
}

/** Writes chunks to FILE (through FILE.partial, renamed when complete) or to standard output. */
async function writeChunks(chunks: AsyncIterable<string | Uint8Array>, out: string | undefined): Promise<void> {
  if (!out) {
    for await (const chunk of chunks) {
      await new Promise<void>((done, fail) => process.stdout.write(chunk, (err) => (err ? fail(err) : done())));
    }
    return;
  }
  const partial = `${out}.partial`;
  const file = createWriteStream(partial);
  try {
    for await (const chunk of chunks) {
      if (!file.write(chunk)) await new Promise<void>((done) => file.once("drain", done));
    }
    await new Promise<void>((done, fail) => file.end((err?: Error | null) => (err ? fail(err) : done())));
    await rename(partial, out);
  } catch (err) {
    file.destroy();
    await rm(partial, { force: true });
    throw err;
  }
}

/** Runs the export; throws with a message for people on bad options or a failed source. */
export async function exportGrades(opts: GradesExportOptions, client: () => AdminClient): Promise<void> {
  if (opts.local && opts.remote) throw new Error("grades export: choose one of --local and --remote");
  if (opts.persistTo && !opts.local) throw new Error("grades export: --persist-to goes with --local");
  let filters: GradeExportFilters;
  try {
    filters = parseGradeExportFilters({ course: opts.course, section: opts.section, assignment: opts.assignment, since: opts.since, until: opts.until, policy: opts.policy });
  } catch (err) {
    throw new Error(`grades export: ${(err as Error).message}`);
  }
  if (opts.local || opts.remote) {
    const pageSize = opts.pageSize ?? D1_CLI_PAGE_SIZE;
    const runner = opts.local ? wranglerPageRunner({ local: true, persistTo: opts.persistTo }) : wranglerPageRunner({ remote: true });
    await writeChunks(gradesCsvPages(runner, filters, pageSize), opts.out);
    return;
  }
  const body = await client().gradesCsv(filters);
  await writeChunks(body, opts.out);
}
