import { createExecutionContext, env } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import app from "../src/index.js";
import { ALICE, BASE, setUpAssignment, uniqueAssignment } from "./helpers.js";

const printable = fc.stringMatching(/^[\x20-\x7e]{0,40}$/);

// The Worker's own fetch handler, in workerd with the real D1/R2/Durable Object bindings. (Not
// SELF.fetch: in the Workers pool each SELF.fetch in one test gets slower than the one before, so
// 10,000 of them take many minutes; the handler is the same code.)
describe("submit endpoints under generated input", () => {
  it("answer 10,000 generated bodies and headers with a JSON error code or 202, never a 5xx", async () => {
    const a = uniqueAssignment("fuzz");
    await setUpAssignment(a);
    const routing = fc.oneof(
      fc.constant({ course: a.course, section: a.section, assignment: a.assignment }),
      fc.record({ course: fc.oneof(printable, fc.constant(a.course)), section: fc.oneof(printable, fc.constant("1")), assignment: printable }, { requiredKeys: [] }),
      fc.jsonValue(),
    );
    const notebookish = fc.record(
      {
        nbformat: fc.oneof(fc.constant(4), fc.jsonValue()),
        nbformat_minor: fc.oneof(fc.nat(10), fc.jsonValue()),
        metadata: fc.oneof(fc.record({ otter_service: routing }), fc.jsonValue()),
        cells: fc.oneof(fc.array(fc.record({ cell_type: fc.oneof(fc.constant("code"), printable), source: fc.string() }), { maxLength: 5 }), fc.jsonValue()),
      },
      { requiredKeys: [] },
    );
    // A branch that is a valid submission (with generated cells), so the happy path is fuzzed too.
    const validBody = fc
      .array(fc.record({ cell_type: fc.constantFrom("code", "markdown", "raw"), source: fc.string(), metadata: fc.constant({}) }), { maxLength: 5 })
      .map((cells) => JSON.stringify({ nb: { nbformat: 4, nbformat_minor: 5, metadata: { otter_service: { course: a.course, section: a.section, assignment: a.assignment } }, cells } }));
    const body = fc.oneof(
      validBody,
      fc.string({ maxLength: 200 }),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.record({ nb: notebookish }).map((v) => JSON.stringify(v)),
      fc.record({ nb: notebookish, user: printable }).map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 200 }),
    );
    const plausibleHeaders = fc.record({ "content-type": fc.constant("application/json"), authorization: fc.constant(`Bearer ${ALICE}`) });
    const randomHeaders = fc.record(
      {
        "content-type": fc.oneof(fc.constant("application/json"), fc.constant("application/json; charset=utf-8"), fc.constant("text/plain"), printable),
        authorization: fc.oneof(fc.constant(`Bearer ${ALICE}`), fc.constant(`token ${ALICE}`), printable, printable.map((t) => `Bearer ${t}`)),
        referer: printable,
        "x-forwarded-user": printable,
      },
      { requiredKeys: [] },
    );
    const headers = fc.oneof(plausibleHeaders, randomHeaders);
    const path = fc.constantFrom("/api/v1/submissions", "/services/otter_grade/", "/services/otter_grade");

    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(path, body, headers, async (p, b, h) => {
        const res = await app.fetch(new Request(`${BASE}${p}`, { method: "POST", headers: h, body: b }), env, createExecutionContext());
        expect(res.status).toBeLessThan(500);
        const answer = (await res.json()) as { error?: unknown; message?: unknown; id?: unknown };
        if (res.status === 202) {
          accepted += 1;
          expect(answer.id).toEqual(expect.any(String));
        } else {
          expect(answer.error).toMatch(/^[a-z_]+$/);
          expect(answer.message).toEqual(expect.any(String));
        }
      }),
      { numRuns: 10_000 },
    );
    // The generators reach the happy path too, so the property is not only about refusals.
    expect(accepted).toBeGreaterThan(0);
  }, 300_000);
});
