import { SELF, createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import app from "../src/index.js";
import { ADMIN, ALICE, BASE, issueToken } from "./helpers.js";

/**
 * A strict RFC 4180 parser, written here independently of the exporter's formatter: records end
 * in CRLF, a field is either bare (no comma, quote, CR or LF) or quoted with inner quotes doubled.
 */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let i = 0;
  while (i < text.length) {
    const record: string[] = [];
    for (;;) {
      let field = "";
      if (text[i] === '"') {
        i += 1;
        for (;;) {
          if (i >= text.length) throw new Error("unterminated quoted field");
          if (text[i] === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
            } else {
              i += 1;
              break;
            }
          } else field += text[i++];
        }
      } else {
        while (i < text.length && text[i] !== "," && text[i] !== "\r" && text[i] !== "\n") {
          if (text[i] === '"') throw new Error(`bare quote at ${i}`);
          field += text[i++];
        }
      }
      record.push(field);
      if (text[i] === ",") {
        i += 1;
        continue;
      }
      if (text.startsWith("\r\n", i)) {
        i += 2;
        break;
      }
      throw new Error(`expected , or CRLF at ${i}, got ${JSON.stringify(text.slice(i, i + 10))}`);
    }
    records.push(record);
  }
  return records;
}

const HEADER = ["userid", "grade", "section", "lab", "timestamp", "course", "assignment", "submission_id", "passback_state"];
type Record_ = Record<(typeof HEADER)[number], string>;

function rowsOf(text: string): Record_[] {
  const [header, ...rows] = parseCsv(text);
  expect(header).toEqual(HEADER);
  for (const r of rows) expect(r).toHaveLength(HEADER.length);
  return rows.map((r) => Object.fromEntries(HEADER.map((h, i) => [h, r[i]!])) as Record_);
}

let courseCounter = 0;
const uniqueCourse = (label: string) => `exp-${label}-${Date.now() % 1_000_000}-${++courseCounter}`;

interface Seed {
  id: string;
  user: string;
  course: string;
  section?: string;
  assignment?: string;
  status?: "queued" | "leased" | "graded" | "failed";
  score?: number | null;
  createdAt: string;
  finishedAt?: string | null;
  passback?: string;
}

/** Writes submissions (and passback rows) straight into D1, in insertion order (= rowid order). */
async function seed(rows: Seed[]) {
  const full = rows.map((r) => ({
    id: r.id,
    user: r.user,
    course: r.course,
    section: r.section ?? "1",
    assignment: r.assignment ?? "lab01",
    status: r.status ?? "graded",
    score: r.score === undefined ? ((r.status ?? "graded") === "graded" ? 1 : null) : r.score,
    created_at: r.createdAt,
    finished_at: r.finishedAt === undefined ? ((r.status ?? "graded") === "graded" ? r.createdAt.replace(/\.\d{3}Z$/, ".500Z") : null) : r.finishedAt,
    passback: r.passback ?? null,
  }));
  for (let i = 0; i < full.length; i += 500) {
    const batch = JSON.stringify(full.slice(i, i + 500));
    await env.DB.batch([
      env.DB.prepare(
        `INSERT INTO submissions (id, user, course, section, assignment, notebook_sha256, notebook_bytes, autograder_sha256, status, score, created_at, finished_at, updated_at)
         SELECT j.value ->> '$.id', j.value ->> '$.user', j.value ->> '$.course', j.value ->> '$.section', j.value ->> '$.assignment', 'nb', 1, 'ag',
                j.value ->> '$.status', j.value ->> '$.score', j.value ->> '$.created_at', j.value ->> '$.finished_at', j.value ->> '$.created_at'
         FROM json_each(?1) AS j ORDER BY j.key`,
      ).bind(batch),
      env.DB.prepare(
        `INSERT INTO passbacks (submission_id, course, section, assignment, user, state, attempts, created_at, updated_at)
         SELECT j.value ->> '$.id', j.value ->> '$.course', j.value ->> '$.section', j.value ->> '$.assignment', j.value ->> '$.user', j.value ->> '$.passback', 1,
                j.value ->> '$.created_at', j.value ->> '$.created_at'
         FROM json_each(?1) AS j WHERE j.value ->> '$.passback' IS NOT NULL ORDER BY j.key`,
      ).bind(batch),
    ]);
  }
}

const at = (minute: number, ms = 0) => new Date(Date.UTC(2026, 2, 1, 9, minute, 0, ms)).toISOString();

function exportUrl(course: string, query: Record<string, string> = {}) {
  const qs = new URLSearchParams(query).toString();
  return `${BASE}/api/v1/staff/courses/${encodeURIComponent(course)}/grades.csv${qs ? `?${qs}` : ""}`;
}

async function exportCsv(course: string, query: Record<string, string> = {}, token = ADMIN) {
  const res = await SELF.fetch(exportUrl(course, query), { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`export: ${res.status} ${text}`);
  return { res, text, rows: rowsOf(text) };
}

describe("grade export (GET /api/v1/staff/courses/:course/grades.csv)", () => {
  it("writes the old columns plus course, assignment, submission_id, passback_state, quoted per RFC 4180", async () => {
    const course = uniqueCourse("quote");
    const tricky = [
      { user: "plain", assignment: "lab01", section: "1" },
      { user: "comma,user", assignment: 'lab, "one"', section: "A,1" },
      { user: 'quote"user', assignment: "lab01", section: "1" },
      { user: "o'brien; DROP TABLE submissions; --", assignment: "it's", section: "1" },
      { user: "multi\nline\r\nuser", assignment: "lab01", section: "1" },
      { user: "ünïcødé 名前 🦦", assignment: "lab ?1 ?2", section: "1" },
      { user: " spaced ", assignment: '"', section: "," },
    ];
    await seed(
      tricky.map((t, i) => ({ id: `${course}-s${i}`, course, ...t, score: [1, 0.667, 0, 0.5, 0.333, 1, 0.25][i]!, createdAt: at(i), passback: i % 2 === 0 ? "delivered" : undefined })),
    );
    await seed([{ id: `${course}-queued`, user: "plain", course, status: "queued", createdAt: at(30) }, { id: `${course}-failed`, user: "plain", course, status: "failed", createdAt: at(31) }]);

    const { res, text, rows } = await exportCsv(course);
    expect(res.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(res.headers.get("content-disposition")).toMatch(/^attachment; filename="grades-exp-quote-[\w-]+\.csv"/);
    expect(text.startsWith("userid,grade,section,lab,timestamp,course,assignment,submission_id,passback_state\r\n")).toBe(true);
    expect(text).toContain('"comma,user"');
    expect(text).toContain('"quote""user"');
    expect(text).toContain('"lab, ""one"""');
    expect(text).toContain('"multi\nline\r\nuser"');

    expect(rows).toHaveLength(tricky.length); // queued and failed are not grades
    const byId = new Map(rows.map((r) => [r.submission_id, r]));
    tricky.forEach((t, i) => {
      expect(byId.get(`${course}-s${i}`)).toEqual({
        userid: t.user,
        grade: ["1.0", "0.667", "0.0", "0.5", "0.333", "1.0", "0.25"][i],
        section: t.section,
        lab: t.assignment,
        timestamp: at(i, 500),
        course,
        assignment: t.assignment,
        submission_id: `${course}-s${i}`,
        passback_state: i % 2 === 0 ? "delivered" : "",
      });
    });
    // Ordered by assignment, then student (SQLite's binary order), then submission order.
    const keys = rows.map((r) => [r.assignment, r.userid]);
    const sorted = [...keys].sort((a, b) => (a[0]! === b[0]! ? cmpUtf8(a[1]!, b[1]!) : cmpUtf8(a[0]!, b[0]!)));
    expect(keys).toEqual(sorted);
  });

  it("filters by section, assignment and a finished_at range (since inclusive, until exclusive)", async () => {
    const course = uniqueCourse("filter");
    const seeds: Seed[] = [];
    let n = 0;
    for (const section of ["1", "2"]) {
      for (const assignment of ["lab01", "lab02"]) {
        for (let minute = 0; minute < 5; minute += 1) {
          seeds.push({ id: `${course}-${n++}`, user: `u${minute}`, course, section, assignment, createdAt: at(minute), finishedAt: at(minute) });
        }
      }
    }
    await seed(seeds);
    const ids = async (query: Record<string, string>) => (await exportCsv(course, query)).rows.map((r) => r.submission_id).sort();
    const expected = (pred: (s: Seed) => boolean) => seeds.filter(pred).map((s) => s.id).sort();

    expect(await ids({})).toEqual(expected(() => true));
    expect(await ids({ section: "2" })).toEqual(expected((s) => s.section === "2"));
    expect(await ids({ assignment: "lab02" })).toEqual(expected((s) => s.assignment === "lab02"));
    expect(await ids({ section: "1", assignment: "lab01" })).toEqual(expected((s) => s.section === "1" && s.assignment === "lab01"));
    expect(await ids({ since: at(1), until: at(3) })).toEqual(expected((s) => s.createdAt >= at(1) && s.createdAt < at(3)));
    // A date-time with an offset means the same instant; empty parameters are no filter.
    expect(await ids({ since: "2026-03-01T11:02:00+02:00", section: "", assignment: "", until: "" })).toEqual(expected((s) => s.createdAt >= at(2)));
    expect(await ids({ until: "2026-03-01" })).toEqual([]);
    expect(await ids({ since: "2026-03-02" })).toEqual([]);
    expect(await ids({ section: "3" })).toEqual([]);
    expect((await exportCsv(uniqueCourse("nothing"))).text).toBe(`${HEADER.join(",")}\r\n`);
  });

  it("picks one row per student and assignment under latest (newest, ties by rowid) and best (highest, ties to newest)", async () => {
    const course = uniqueCourse("policy");
    // Generated: 30 students × 3 assignments × 1..6 submissions, scores from a small set so ties happen,
    // created_at from a small set so those tie too.
    let state = 12345;
    const random = (k: number) => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state % k;
    };
    const seeds: Seed[] = [];
    for (let s = 0; s < 30; s += 1) {
      for (const assignment of ["a", "b, \"c\"", "d"]) {
        const count = 1 + random(6);
        for (let k = 0; k < count; k += 1) {
          seeds.push({
            id: `${course}-${seeds.length}`,
            user: s % 7 === 0 ? `st,"${s}"` : `st${s}`,
            course,
            assignment,
            section: String(1 + random(2)),
            score: [0, 0.25, 0.5, 1][random(4)]!,
            createdAt: at(random(8)),
            finishedAt: at(random(8)),
            passback: ["delivered", "superseded", undefined][random(3)],
          });
        }
      }
    }
    seeds.push({ id: `${course}-not-graded`, user: "st1", course, assignment: "a", status: "queued", createdAt: at(59) });
    await seed(seeds);
    const graded = seeds.filter((s) => s.status !== "queued");
    const order = new Map(seeds.map((s, i) => [s.id, i]));

    const pick = (rows: Seed[], better: (x: Seed, y: Seed) => boolean) => {
      const winners = new Map<string, Seed>();
      for (const r of rows) {
        const key = JSON.stringify([r.user, r.assignment]);
        const current = winners.get(key);
        if (!current || better(r, current)) winners.set(key, r);
      }
      return [...winners.values()].map((w) => w.id).sort();
    };
    const newer = (x: Seed, y: Seed) => x.createdAt > y.createdAt || (x.createdAt === y.createdAt && order.get(x.id)! > order.get(y.id)!);
    const best = (x: Seed, y: Seed) => x.score! > y.score! || (x.score === y.score && newer(x, y));
    const ids = async (query: Record<string, string>) => (await exportCsv(course, query)).rows.map((r) => r.submission_id).sort();

    expect(await ids({ policy: "all" })).toEqual(graded.map((s) => s.id).sort());
    expect(await ids({ policy: "latest" })).toEqual(pick(graded, newer));
    expect(await ids({ policy: "best" })).toEqual(pick(graded, best));
    // Filters apply before the pick: the best before a deadline, the latest in a section.
    const deadline = at(4);
    expect(await ids({ policy: "best", until: deadline })).toEqual(pick(graded.filter((s) => s.finishedAt! < deadline), best));
    expect(await ids({ policy: "latest", section: "2" })).toEqual(pick(graded.filter((s) => s.section === "2"), newer));
    expect(await ids({ policy: "latest", assignment: 'b, "c"' })).toEqual(pick(graded.filter((s) => s.assignment === 'b, "c"'), newer));
    const latest = (await exportCsv(course, { policy: "latest" })).rows;
    expect(new Set(latest.map((r) => JSON.stringify([r.userid, r.assignment]))).size).toBe(latest.length);
    expect(latest.length).toBe(new Set(graded.map((s) => JSON.stringify([s.user, s.assignment]))).size);
  });

  it("breaks an exact created_at tie by rowid under latest, and a score tie by recency under best", async () => {
    const course = uniqueCourse("ties");
    await seed([
      { id: `${course}-z-first`, user: "u", course, createdAt: at(1), score: 0.5 },
      { id: `${course}-a-second`, user: "u", course, createdAt: at(1), score: 0.5 }, // same instant, inserted later
      { id: `${course}-older-best`, user: "v", course, createdAt: at(1), score: 1 },
      { id: `${course}-newer-worse`, user: "v", course, createdAt: at(2), score: 0.9 },
      { id: `${course}-tie-old`, user: "w", course, createdAt: at(1), score: 0.7 },
      { id: `${course}-tie-new`, user: "w", course, createdAt: at(3), score: 0.7 },
    ]);
    const pickFor = async (policy: string) => Object.fromEntries((await exportCsv(course, { policy })).rows.map((r) => [r.userid, r.submission_id]));
    expect(await pickFor("latest")).toEqual({ u: `${course}-a-second`, v: `${course}-newer-worse`, w: `${course}-tie-new` });
    expect(await pickFor("best")).toEqual({ u: `${course}-a-second`, v: `${course}-older-best`, w: `${course}-tie-new` });
  });

  it("lets staff export their own course only, and refuses bad parameters with a 400 code", async () => {
    const mine = uniqueCourse("mine");
    const other = uniqueCourse("other");
    await seed([{ id: `${mine}-1`, user: "u", course: mine, createdAt: at(1) }, { id: `${other}-1`, user: "u", course: other, createdAt: at(1) }]);
    const staff = await issueToken({ kind: "staff", name: "ta-export", course: mine });
    expect((await exportCsv(mine, {}, staff.token)).rows.map((r) => r.submission_id)).toEqual([`${mine}-1`]);

    const call = (course: string, token: string | null, query: Record<string, string> = {}) =>
      SELF.fetch(exportUrl(course, query), { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const refused = await call(other, staff.token);
    expect([refused.status, ((await refused.json()) as { error: string }).error]).toEqual([403, "forbidden_course"]);
    for (const token of [null, ALICE, "nope"]) {
      const res = await call(mine, token);
      expect([res.status, ((await res.json()) as { error: string }).error]).toEqual([401, "invalid_staff_token"]);
    }
    const bad: Array<[Record<string, string>, string]> = [
      [{ policy: "worst" }, "invalid_policy"],
      [{ since: "yesterday" }, "invalid_since"],
      [{ since: "2026-02-31" }, "invalid_since"],
      [{ until: "2026-03-01T25:00:00Z" }, "invalid_until"],
      [{ since: "2026-03-02", until: "2026-03-01" }, "invalid_range"],
      [{ section: "x".repeat(201) }, "invalid_section"],
    ];
    for (const [query, code] of bad) {
      const res = await call(mine, ADMIN, query);
      expect(res.status, JSON.stringify(query)).toBe(400);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe(code);
      expect(body.message).toBeTruthy();
    }
  });

  it("streams 10,000 rows page by page: 1000-row keyset queries, each run only when the client reads on", async () => {
    const course = uniqueCourse("big");
    const seeds: Seed[] = [];
    for (let i = 0; i < 10_000; i += 1) {
      seeds.push({ id: `${course}-${String(i).padStart(5, "0")}`, user: `student-${i % 1237}`, course, assignment: `lab${i % 2}`, score: (i % 1000) / 1000, createdAt: at(i % 60, i % 1000), passback: i % 3 ? "delivered" : undefined });
    }
    await seed(seeds);

    // Through the Worker's fetch handler with a D1 binding that counts the export's page queries.
    const pageQueries: string[] = [];
    const countingDb = new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "prepare") {
          return (sql: string) => {
            if (sql.includes("FROM submissions AS s")) pageQueries.push(sql);
            return target.prepare(sql);
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const ctx = createExecutionContext();
    const started = Date.now();
    const res = await app.fetch(new Request(exportUrl(course), { headers: { authorization: `Bearer ${ADMIN}` } }), { ...env, DB: countingDb }, ctx);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    const chunks: string[] = [];
    const queriesWhenRead: number[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(decoder.decode(value, { stream: true }));
      queriesWhenRead.push(pageQueries.length);
      if (chunks.length === 1) {
        // A slow client: while it holds the first page, the stream reads at most one more.
        await new Promise((r) => setTimeout(r, 200));
        expect(pageQueries.length).toBeLessThanOrEqual(2);
      }
    }
    await waitOnExecutionContext(ctx);
    const elapsed = Date.now() - started;
    const rows = rowsOf(chunks.join(""));
    expect(rows).toHaveLength(10_000);
    expect(new Set(rows.map((r) => r.submission_id)).size).toBe(10_000);
    // Some page ends inside one student's run of submissions, so the keyset's rowid part is exercised.
    const key = (r: Record_) => `${r.lab}\u0000${r.userid}`;
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].some((k) => key(rows[k * 1000 - 1]!) === key(rows[k * 1000]!))).toBe(true);
    // 10 full pages and the empty one that ends it; a chunk per page; the stream never ran ahead
    // of its reader by more than one page.
    expect(pageQueries).toHaveLength(11);
    expect(chunks.length).toBeGreaterThanOrEqual(10);
    queriesWhenRead.forEach((q, i) => expect(q).toBeLessThanOrEqual(i + 2));
    expect(pageQueries.slice(1).every((sql) => sql.includes("(s.assignment, s.user, s.rowid) >"))).toBe(true);
    console.log(`grade export: 10,000 rows in ${elapsed} ms, ${chunks.length} chunks, ${pageQueries.length} page queries`);

    // And through the real HTTP path, by a staff token of the course.
    const staff = await issueToken({ kind: "staff", name: "ta-big", course });
    const viaHttp = await exportCsv(course, {}, staff.token);
    expect(viaHttp.text).toBe(chunks.join(""));
  });
});

/** SQLite's default (BINARY) order: UTF-8 bytes. */
function cmpUtf8(a: string, b: string): number {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}
