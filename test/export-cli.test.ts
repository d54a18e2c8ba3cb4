import { readFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, adminCli, newCredentials, run, startGateway, waitFor } from "../scripts/local-stack.js";
import { ScriptedRunner } from "./support/scripted-runner.js";

/**
 * `otter-edge grades export` against a real `wrangler dev` gateway: through the staff API and
 * straight from the gateway's local D1 (`--local --persist-to`), which must give the same bytes.
 */
const TSX = join(ROOT, "node_modules", ".bin", "tsx");
const WRANGLER = join(ROOT, "node_modules", ".bin", "wrangler");
const CLI = join(ROOT, "gateway", "cli", "otter-edge.ts");
const AUTOGRADER = join(ROOT, "assignments", "sample", "dist", "autograder.zip");
const COURSE = "cli101";
const TRICKY_ASSIGNMENT = 'lab, "two"; it\'s';

let work: string;
let credentials: Credentials;
let gateway: Gateway;
let realIds: string[] = [];

/** An SQLite string literal, written here independently of the exporter's. */
const lit = (s: string) => `'${s.replaceAll("'", "''")}'`;

async function cli(args: string[], token = credentials.admin): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const stdout = await run(TSX, [CLI, "--gateway", gateway.url, ...args], { OTTER_EDGE_ADMIN_TOKEN: token });
    return { code: 0, stdout, stderr: "" };
  } catch (err) {
    return { code: 1, stdout: "", stderr: (err as Error).message };
  }
}

/** Runs the export into a file and returns its bytes. */
async function exportTo(name: string, args: string[], token?: string): Promise<Buffer> {
  const out = join(work, name);
  const result = await cli(["grades", "export", "--course", COURSE, "--out", out, ...args], token);
  if (result.code !== 0) throw new Error(result.stderr);
  return readFile(out);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "otter-edge-export-"));
  credentials = newCredentials(["alice", "bob"]);
  gateway = await startGateway({ stateDir: join(work, "state"), credentials });

  // Two grades through the real pipeline: submission API, dispatcher, a runner's result, the passback outbox.
  const configFile = join(work, "config.json");
  await writeFile(configFile, JSON.stringify({ [COURSE]: { "1": { course_id: "DemoX+CLI+2026", assignments: { sample: "block-1" } } } }));
  await adminCli(gateway.url, credentials.admin, ["config", "load", configFile]);
  const upload = await adminCli<{ otter_version: string }>(gateway.url, credentials.admin, ["autograder", "upload", COURSE, "sample", AUTOGRADER]);
  const runner = await ScriptedRunner.connect(gateway.url, credentials.runner, 2, [upload.otter_version]);
  for (const [user, score] of [["alice", 0.6], ["bob", 1]] as const) {
    const res = await fetch(`${gateway.url}/api/v1/submissions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${credentials.students[user]}` },
      body: JSON.stringify({ nb: { nbformat: 4, nbformat_minor: 5, metadata: { otter_service: { course: COURSE, section: "1", assignment: "sample" } }, cells: [] } }),
    });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    runner.grade(await runner.leaseFor(id), score);
    realIds.push(id);
  }
  await waitFor(
    async () => (await gateway.query<{ n: number }>(`SELECT count(*) AS n FROM submissions WHERE status = 'graded' AND course = '${COURSE}'`))[0]!.n === 2,
    30_000,
    () => "the two real submissions were not graded",
  );
  runner.close();

  // Many more rows, with awkward names, straight into the gateway's local D1 while it runs.
  const users = ["plain", "comma,user", 'quote"user', "o'brien", "semi;colon", "multi\nline", "ünïcødé 🦦", " spaced "];
  const values: string[] = [];
  for (let i = 0; i < 600; i += 1) {
    const user = `${users[i % users.length]}-${i % 45}`;
    const assignment = [TRICKY_ASSIGNMENT, "sample", "lab03"][i % 3]!;
    const created = new Date(Date.UTC(2026, 2, 1, 9, 0, 0) + (i % 97) * 60_000).toISOString();
    const finished = new Date(Date.parse(created) + 30_000 + (i % 7) * 1000).toISOString();
    const status = i % 50 === 0 ? "failed" : "graded";
    const score = status === "graded" ? String([0, 0.25, 0.333, 0.5, 1][i % 5]) : "NULL";
    values.push(
      `(${lit(`seed-${String(i).padStart(4, "0")}`)}, ${lit(user)}, ${lit(COURSE)}, ${lit(i % 4 === 0 ? "2" : "1")}, ${lit(assignment)}, 'nb', 1, 'ag', ${lit(status)}, ${score}, ${lit(created)}, ${status === "graded" ? lit(finished) : "NULL"}, ${lit(created)})`,
    );
  }
  const inserts: string[] = [];
  // D1 caps one statement at 100 kB.
  for (let i = 0; i < values.length; i += 50) {
    inserts.push(`INSERT INTO submissions (id, user, course, section, assignment, notebook_sha256, notebook_bytes, autograder_sha256, status, score, created_at, finished_at, updated_at) VALUES\n${values.slice(i, i + 50).join(",\n")};`);
  }
  const sql = [
    ...inserts,
    `INSERT INTO passbacks (submission_id, course, section, assignment, user, state, attempts, created_at, updated_at)
     SELECT id, course, section, assignment, user, CASE WHEN rowid % 3 = 0 THEN 'delivered' ELSE 'dead' END, 1, created_at, created_at
     FROM submissions WHERE id LIKE 'seed-%' AND status = 'graded' AND rowid % 2 = 0;`,
  ].join("\n");
  const seedFile = join(work, "seed.sql");
  await writeFile(seedFile, sql);
  await run(WRANGLER, ["d1", "execute", "DB", "--local", "--persist-to", gateway.stateDir, "--file", seedFile]);
}, 240_000);

afterAll(async () => {
  await gateway?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("otter-edge grades export", () => {
  it("gives the same bytes through the staff API and from the local D1, for each filter and policy", async () => {
    const cases: Array<[string, string[]]> = [
      ["all", []],
      ["latest", ["--policy", "latest"]],
      ["best-section-until", ["--policy", "best", "--section", "1", "--until", "2026-03-01T10:00:00Z"]],
      ["tricky-assignment-since", ["--assignment", TRICKY_ASSIGNMENT, "--since", "2026-03-01T11:00:00+01:00"]],
    ];
    for (const [name, args] of cases) {
      const viaApi = await exportTo(`${name}-api.csv`, args);
      const viaD1 = await exportTo(`${name}-local.csv`, ["--local", "--persist-to", gateway.stateDir, ...args]);
      expect(viaD1.equals(viaApi), name).toBe(true);
      expect(viaApi.toString("utf8").match(/\r\n/g)!.length, name).toBeGreaterThan(20);
      expect(viaApi.toString("utf8").split("\r\n")[0]).toBe("userid,grade,section,lab,timestamp,course,assignment,submission_id,passback_state");
    }
    const all = (await readFile(join(work, "all-api.csv"), "utf8"));
    expect(all).toContain('"quote""user-');
    expect(all).toContain('"multi\nline-');
    expect(all).toContain(`"${TRICKY_ASSIGNMENT.replaceAll('"', '""')}"`);
    // The graded seeds (12 of 600 failed) and the two real grades; the real ones as the runner reported them.
    const lines = all.match(/\r\n/g)!.length - 1;
    expect(lines).toBe(588 + 2);
    for (const id of realIds) expect(all).toMatch(new RegExp(`\\r\\n(alice,0\\.6|bob,1\\.0),1,sample,[0-9T:.Z-]+,${COURSE},sample,${id},(pending|disabled|dead|retrying)\\r\\n`));
  });

  it("pages through wrangler d1 execute, and writes to standard output when no --out is given", async () => {
    const whole = await readFile(join(work, "all-api.csv"));
    const paged = await exportTo("paged-local.csv", ["--local", "--persist-to", gateway.stateDir, "--page-size", "150"]);
    expect(paged.equals(whole)).toBe(true);
    const stdout = await cli(["grades", "export", "--course", COURSE, "--policy", "latest"]);
    expect(stdout.code).toBe(0);
    expect(Buffer.from(stdout.stdout, "utf8").equals(await readFile(join(work, "latest-api.csv")))).toBe(true);
  });

  it("accepts a staff token of the course, refuses another course's, and reports bad options", async () => {
    const staff = await adminCli<{ token: string }>(gateway.url, credentials.admin, ["tokens", "create", "staff", "ta-cli", "--course", COURSE]);
    const asStaff = await exportTo("staff.csv", [], staff.token);
    expect(asStaff.equals(await readFile(join(work, "all-api.csv")))).toBe(true);

    const other = await cli(["grades", "export", "--course", "other101", "--out", join(work, "other.csv")], staff.token);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/HTTP 403.*forbidden_course/);
    await expect(readFile(join(work, "other.csv"))).rejects.toThrow(/ENOENT/);

    const badPolicy = await cli(["grades", "export", "--course", COURSE, "--policy", "worst", "--local"]);
    expect(badPolicy.stderr).toMatch(/policy must be one of all, latest, best/);
    const badSince = await cli(["grades", "export", "--course", COURSE, "--since", "2026-02-30"]);
    expect(badSince.stderr).toMatch(/since must be an ISO-8601 date/);
  });
});
