import { SELF, env, createExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import app from "../src/index.js";
import { ALICE, BASE, notebook, setUpAssignment, status, submit, uniqueAssignment } from "./helpers.js";

async function post(body: BodyInit, headers: Record<string, string> = {}, path = "/api/v1/submissions") {
  const res = await SELF.fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ALICE}`, ...headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as { error?: string; message?: string; id?: string } };
}

describe("submission intake", () => {
  it("accepts a valid notebook on the legacy hub path and the versioned API, answering 202 with a status URL", async () => {
    const a = uniqueAssignment("ok");
    await setUpAssignment(a);
    for (const path of ["/services/otter_grade/", "/services/otter_grade", "/api/v1/submissions"]) {
      const { id, status_url } = await submit(a, ALICE, path);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      const prefix = path.startsWith("/services") ? "/services/otter_grade" : "";
      expect(status_url).toBe(`${BASE}${prefix}/api/v1/submissions/${id}`);
      const s = await SELF.fetch(status_url, { headers: { authorization: `Bearer ${ALICE}` } });
      expect(s.status).toBe(200);
      const body = (await s.json()) as { status: string; user: string; events: Array<{ state: string }> };
      expect(body.status).toBe("queued");
      expect(body.user).toBe("alice");
      expect(body.events.map((e) => e.state)).toEqual(["queued"]);
    }
  });

  it("stores the notebook bytes in R2 under their SHA-256", async () => {
    const a = uniqueAssignment("r2");
    await setUpAssignment(a);
    const { id } = await submit(a);
    const row = await env.DB.prepare("SELECT notebook_sha256 AS sha, notebook_bytes AS n FROM submissions WHERE id = ?").bind(id).first<{ sha: string; n: number }>();
    const blob = await env.BLOBS.get(`notebooks/${row!.sha}`);
    const bytes = new Uint8Array(await blob!.arrayBuffer());
    expect(bytes.byteLength).toBe(row!.n);
    const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
    expect(digest).toBe(row!.sha);
    expect(JSON.parse(new TextDecoder().decode(bytes)).metadata.otter_service.course).toBe(a.course);
  });

  it("writes an identical notebook to R2 once: a second submission of the same bytes reuses the stored blob", async () => {
    const a = uniqueAssignment("r2-once");
    await setUpAssignment(a);
    const sha = async (id: string) => (await env.DB.prepare("SELECT notebook_sha256 AS sha FROM submissions WHERE id = ?").bind(id).first<{ sha: string }>())!.sha;
    const first = await sha((await submit(a)).id);
    const stored = await env.BLOBS.head(`notebooks/${first}`);
    const second = await sha((await submit(a)).id);
    expect(second).toBe(first);
    // Each R2 write makes a new version: the same version means the second submission wrote nothing.
    expect((await env.BLOBS.head(`notebooks/${second}`))!.version).toBe(stored!.version);
  });

  const routing = { course: "nowhere", section: "1", assignment: "lab01" };
  const cases: Array<[string, () => Promise<{ status: number; body: { error?: string; message?: string } }>, number, string]> = [
    ["body that is not JSON", () => post("{not json"), 400, "invalid_json"],
    ["JSON without nb", () => post(JSON.stringify({ notebook: {} })), 400, "missing_notebook"],
    ["nb that is not an object", () => post(JSON.stringify({ nb: "hello" })), 400, "invalid_notebook"],
    ["nbformat 3 notebook", () => post(JSON.stringify({ nb: { ...notebook(routing), nbformat: 3 } })), 400, "unsupported_nbformat"],
    ["notebook without cells", () => post(JSON.stringify({ nb: { ...notebook(routing), cells: "none" } })), 400, "invalid_notebook"],
    ["notebook without otter_service", () => post(JSON.stringify({ nb: notebook(undefined) })), 400, "missing_routing"],
    ["otter_service without assignment", () => post(JSON.stringify({ nb: notebook({ course: "x", section: "1" } as never) })), 400, "invalid_routing"],
    ["unknown course", () => post(JSON.stringify({ nb: notebook(routing) })), 404, "unknown_course"],
    ["wrong content type", () => post(JSON.stringify({ nb: notebook(routing) }), { "content-type": "text/plain" }), 415, "unsupported_media_type"],
    ["body over the cap", () => post(JSON.stringify({ nb: notebook(routing, { padding: "x".repeat(250_000) }) })), 413, "payload_too_large"],
    ["no credential", () => post(JSON.stringify({ nb: notebook(routing) }), { authorization: "" }), 401, "unauthenticated"],
    ["a wrong token", () => post(JSON.stringify({ nb: notebook(routing) }), { authorization: "Bearer nope" }), 401, "invalid_credentials"],
    ["a forged Referer alone", () => post(JSON.stringify({ nb: notebook(routing) }), { authorization: "", referer: "https://hub.example/user/alice/notebooks/lab01.ipynb" }), 401, "unauthenticated"],
  ];
  for (const [what, request, code, error] of cases) {
    it(`refuses ${what} with ${code} ${error}`, async () => {
      const res = await request();
      expect(res.status).toBe(code);
      expect(res.body.error).toBe(error);
      expect(res.body.message).toEqual(expect.any(String));
    });
  }

  it("refuses an unknown section and an unknown assignment of a known course", async () => {
    const a = uniqueAssignment("routing");
    await setUpAssignment(a);
    const section = await post(JSON.stringify({ nb: notebook({ ...a, section: "99" }) }));
    expect([section.status, section.body.error]).toEqual([404, "unknown_section"]);
    const assignment = await post(JSON.stringify({ nb: notebook({ ...a, assignment: "lab99" }) }));
    expect([assignment.status, assignment.body.error]).toEqual([404, "unknown_assignment"]);
  });

  it("refuses an assignment whose autograder was never uploaded with 409", async () => {
    const a = uniqueAssignment("noag");
    const res = await SELF.fetch(`${BASE}/api/v1/admin/config`, {
      method: "PUT",
      headers: { authorization: "Bearer admin-token", "content-type": "application/json" },
      body: JSON.stringify({ [a.course]: { "1": { assignments: { lab01: null } } } }),
    });
    expect(res.status).toBe(200);
    const r = await post(JSON.stringify({ nb: notebook(a) }));
    expect([r.status, r.body.error]).toEqual([409, "assignment_not_ready"]);
  });

  it("refuses everyone when no student authenticator is configured, instead of defaulting open", async () => {
    const request = new Request(`${BASE}/api/v1/submissions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ALICE}` },
      body: JSON.stringify({ nb: notebook({ course: "x", section: "1", assignment: "y" }) }),
    });
    const res = await app.fetch(request, { ...env, DEV_USER_TOKENS: undefined }, createExecutionContext());
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: string }).error).toBe("authentication_not_configured");
  });

  it("shows a submission only to the student who made it", async () => {
    const a = uniqueAssignment("owner");
    await setUpAssignment(a);
    const { id } = await submit(a);
    expect((await status(id, "bob-token")).code).toBe(403);
    expect((await status("00000000-0000-0000-0000-000000000000")).code).toBe(404);
  });

  it("refuses an autograder.zip that does not pin otter-grader", async () => {
    const { zipSync, strToU8 } = await import("fflate");
    const res = await SELF.fetch(`${BASE}/api/v1/admin/assignments/c/a/autograder`, {
      method: "PUT",
      headers: { authorization: "Bearer admin-token" },
      body: zipSync({ "otter_config.json": strToU8("{}"), "requirements.txt": strToU8("numpy\n") }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe("otter_version_unpinned");
  });

  it("answers unknown routes with a JSON 404", async () => {
    const res = await SELF.fetch(`${BASE}/nope`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: string }).error).toBe("not_found");
  });
});

describe("submission rate limits", () => {
  it("answers 429 with Retry-After once a student passes the per-minute limit, and counts students apart", async () => {
    const a = uniqueAssignment("ratelimit");
    await setUpAssignment(a);
    const limited = { ...env, SUBMIT_RATE_LIMITS: "on" };
    const send = (token: string) =>
      app.fetch(
        new Request(`${BASE}/api/v1/submissions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
          body: JSON.stringify({ nb: notebook({ course: a.course, section: a.section, assignment: a.assignment }) }),
        }),
        limited,
        createExecutionContext(),
      );
    const statuses: number[] = [];
    let refusal: Response | undefined;
    for (let i = 0; i < 40 && !refusal; i++) {
      const res = await send(ALICE);
      statuses.push(res.status);
      if (res.status === 429) refusal = res;
    }
    expect(statuses.filter((s) => s === 202).length).toBe(30);
    expect(refusal!.headers.get("retry-after")).toBe("60");
    expect(((await refusal!.json()) as { error: string }).error).toBe("rate_limited_user");
    expect((await send("bob-token")).status).toBe(202);
  });
});
