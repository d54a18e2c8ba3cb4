import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signBodyRequest } from "../gateway/src/lti/oauth.js";
import { replaceResultXml } from "../gateway/src/lti/outcomes-xml.js";
import { type Credentials, type Gateway, ROOT, newCredentials, startGateway, waitFor } from "../scripts/local-stack.js";
import { LmsStandin } from "./support/lms.js";
import { ScriptedRunner } from "./support/scripted-runner.js";

const AUTOGRADER = join(ROOT, "assignments", "sample", "dist", "autograder.zip");
const COURSE_ID = "DemoX+LTI+2026";
const CONFIG = {
  ltitest: {
    "1": { course_id: COURSE_ID, assignments: { lab: "block-lab", "lab-best": { block: "block-best", policy: "best" } } },
    quiet: { course_id: COURSE_ID, post_grade: false, assignments: { lab: "block-lab" } },
  },
};

interface Stack {
  work: string;
  lms: LmsStandin;
  credentials: Credentials;
  gateway: Gateway;
  runner: ScriptedRunner;
}

async function startStack(lms: LmsStandin, vars: Record<string, string> = {}): Promise<Stack> {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-lti-"));
  const credentials = newCredentials(["alice", "bob", "carol", "dave", "erin", "frank"]);
  const gateway = await startGateway({
    stateDir: join(work, "state"),
    credentials,
    vars: {
      LTI_CONSUMERS: `${lms.key}:${lms.secret}`,
      EDX_URL: lms.url,
      PASSBACK_TIMEOUT_MS: "2000",
      PASSBACK_BACKOFF_BASE_MS: "200",
      PASSBACK_BACKOFF_MAX_MS: "1000",
      ...vars,
    },
  });
  const admin = { authorization: `Bearer ${credentials.admin}` };
  const config = await fetch(`${gateway.url}/api/v1/admin/config`, { method: "PUT", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify(CONFIG) });
  expect(config.status).toBe(200);
  for (const assignment of ["lab", "lab-best"]) {
    const { readFile } = await import("node:fs/promises");
    const upload = await fetch(`${gateway.url}/api/v1/admin/assignments/ltitest/${assignment}/autograder`, { method: "PUT", headers: admin, body: await readFile(AUTOGRADER) });
    expect(upload.status).toBe(200);
  }
  const runner = await ScriptedRunner.connect(gateway.url, credentials.runner, 4);
  return { work, lms, credentials, gateway, runner };
}

async function stopStack(stack: Stack | undefined) {
  stack?.runner.close();
  await stack?.gateway.stop();
  if (stack) await rm(stack.work, { recursive: true, force: true });
}

function notebook(section: string, assignment: string) {
  return { nbformat: 4, nbformat_minor: 5, metadata: { otter_service: { course: "ltitest", section, assignment } }, cells: [] };
}

async function submit(stack: Stack, user: string, section = "1", assignment = "lab"): Promise<string> {
  const res = await fetch(`${stack.gateway.url}/api/v1/submissions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${stack.credentials.students[user]}` },
    body: JSON.stringify({ nb: notebook(section, assignment) }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

async function status(stack: Stack, user: string, id: string): Promise<Record<string, any>> {
  const res = await fetch(`${stack.gateway.url}/api/v1/submissions/${id}`, { headers: { authorization: `Bearer ${stack.credentials.students[user]}` } });
  return (await res.json()) as Record<string, any>;
}

const SETTLED = ["delivered", "dead", "superseded", "disabled"];

/** Waits until the submission's passback reaches a state it only leaves by a staff action. */
async function settledPassback(stack: Stack, user: string, id: string, timeoutMs = 60_000): Promise<Record<string, any>> {
  let last: Record<string, any> = {};
  await waitFor(
    async () => {
      last = await status(stack, user, id);
      return SETTLED.includes(last.passback?.state);
    },
    timeoutMs,
    () => `passback of ${id} did not settle: ${JSON.stringify(last.passback)}`,
  );
  return last;
}

async function gradeAndSettle(stack: Stack, user: string, score: number, section = "1", assignment = "lab") {
  const id = await submit(stack, user, section, assignment);
  stack.runner.grade(await stack.runner.leaseFor(id), score);
  return { id, final: await settledPassback(stack, user, id) };
}

async function launch(stack: Stack, fields: Record<string, string>): Promise<{ status: number; body: string }> {
  const res = await fetch(`${stack.gateway.url}/lti/launch`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields) });
  return { status: res.status, body: await res.text() };
}

const launchParams = (user: string) => ({
  resource_link_id: "lms.test-block-lab",
  user_id: user,
  context_id: "course-v1:DemoX+LTI+2026",
  lis_outcome_service_url: "", // set per test to the stand-in's URL
  lis_result_sourcedid: `sid-${user}-lab`,
});

/** The edX sourcedId the gateway builds from course config for a student with no launch. */
const configSourcedId = (lms: LmsStandin, user: string, block = "block-lab") => `course-v1%3A${COURSE_ID}:${new URL(lms.url).host}-${block}:${user}`;

describe("LTI 1.1 grade passback against an LMS that verifies signatures with oauthlib", () => {
  let lms: LmsStandin;
  let stack: Stack;

  beforeAll(async () => {
    lms = await LmsStandin.start();
    stack = await startStack(lms);
  });
  afterAll(async () => {
    await stopStack(stack);
    await lms?.stop();
  });

  it("posts the grade from the student's own launch, once, on the first try", async () => {
    const fields = await lms.signLaunch(`${stack.gateway.url}/lti/launch`, { ...launchParams("alice"), lis_outcome_service_url: `${lms.url}/outcomes/lab` });
    const linked = await launch(stack, fields);
    expect(linked.status, linked.body).toBe(200);

    const gradedAt = Date.now();
    const { final } = await gradeAndSettle(stack, "alice", 0.6);
    expect(final.passback).toMatchObject({ state: "delivered", attempts: 1, posted_score: 0.6, last_error: null });
    console.log(`outbox wait, first-try delivery: ${Date.parse(final.passback.delivered_at) - Date.parse(final.finished_at)} ms (grade recorded → LMS acknowledged); ${Date.now() - gradedAt} ms result → observed`);
    const received = (await lms.grades()).filter((g) => g.sourcedId === "sid-alice-lab");
    expect(received.map((g) => g.textString)).toEqual(["0.6"]);
  });

  it("refuses a launch whose signature does not verify, a replayed nonce, and a stale timestamp", async () => {
    const url = `${stack.gateway.url}/lti/launch`;
    const params = { ...launchParams("mallory"), lis_outcome_service_url: `${lms.url}/outcomes/lab` };
    const signed = await lms.signLaunch(url, params);
    const forged = await launch(stack, { ...signed, user_id: "alice" });
    expect(forged.status).toBe(401);
    expect(JSON.parse(forged.body).error).toBe("invalid_signature");

    expect((await launch(stack, signed)).status).toBe(200);
    const replay = await launch(stack, signed);
    expect([replay.status, JSON.parse(replay.body).error]).toEqual([401, "replayed_nonce"]);

    const stale = await launch(stack, await lms.signLaunch(url, params, { timestamp: Math.floor(Date.now() / 1000) - 3600 }));
    expect([stale.status, JSON.parse(stale.body).error]).toEqual([401, "stale_timestamp"]);
  });

  it("keeps a grade through an LMS outage and delivers it once when the LMS is back (config-built edX URL)", async () => {
    await lms.failNext("http_500", 3);
    const { final } = await gradeAndSettle(stack, "bob", 0.8);
    expect(final.passback).toMatchObject({ state: "delivered", attempts: 4 });
    const received = (await lms.grades()).filter((g) => g.sourcedId === configSourcedId(lms, "bob"));
    expect(received.map((g) => g.textString)).toEqual(["0.8"]);
    const paths = (await lms.requests()).filter((r) => r.path.includes("block@block-lab/handler_noauth/outcome_service_handler"));
    expect(paths.map((r) => r.mode)).toEqual(["http_500", "http_500", "http_500", "ok"]);
  });

  it("retries a request the LMS never answers, and replies of failure or garbage", async () => {
    await lms.failNext("hang", 1);
    const hung = await gradeAndSettle(stack, "carol", 0.5);
    expect(hung.final.passback).toMatchObject({ state: "delivered", attempts: 2 });
    await lms.failNext("failure", 2);
    const failed = await gradeAndSettle(stack, "carol", 0.7);
    expect(failed.final.passback).toMatchObject({ state: "delivered", attempts: 3 });
    await lms.failNext("unparseable", 1);
    const garbled = await gradeAndSettle(stack, "carol", 0.9);
    expect(garbled.final.passback).toMatchObject({ state: "delivered", attempts: 2 });
    const attempts = await stack.gateway.query<{ description: string; code_major: string | null; http_status: number | null }>(
      `SELECT a.description, a.code_major, a.http_status FROM passback_attempts a JOIN passbacks p ON p.id = a.passback_id
       WHERE p.submission_id IN ('${hung.id}', '${failed.id}', '${garbled.id}') ORDER BY a.id`,
    );
    expect(attempts.map((a) => a.code_major)).toEqual([null, "success", "failure", "failure", "success", null, "success"]);
    expect(attempts[0]!.description).toMatch(/no reply within 2000 ms/);
    expect(attempts[5]).toMatchObject({ http_status: 200 });
    expect(attempts[5]!.description).toMatch(/no imsx_POXEnvelopeResponse/);
  });

  it("posts other students' grades while one student's LMS request hangs", async () => {
    await lms.failNext("hang", 1);
    const stuck = await submit(stack, "erin");
    stack.runner.grade(await stack.runner.leaseFor(stuck), 0.4);
    // Erin's request is now open at the LMS, which will not answer it (the gateway gives up after 2 s).
    await waitFor(async () => (await lms.requests()).some((r) => r.mode === "hang"), 30_000, () => "the LMS never saw erin's request");
    const { final } = await gradeAndSettle(stack, "frank", 0.6);
    expect(final.passback).toMatchObject({ state: "delivered", attempts: 1 });
    // Frank's grade went through while erin's first try was still waiting for its answer.
    const erinMeanwhile = await status(stack, "erin", stuck);
    expect(erinMeanwhile.passback).toMatchObject({ attempts: 0 });
    expect((await settledPassback(stack, "erin", stuck)).passback).toMatchObject({ state: "delivered", attempts: 2 });
  });

  it("never lets an older submission's late grade overwrite a newer one (policy latest)", async () => {
    const older = await submit(stack, "dave");
    const newer = await submit(stack, "dave");
    const [olderLease, newerLease] = [await stack.runner.leaseFor(older), await stack.runner.leaseFor(newer)];
    stack.runner.grade(newerLease, 0.9);
    expect((await settledPassback(stack, "dave", newer)).passback.state).toBe("delivered");
    stack.runner.grade(olderLease, 0.3);
    expect((await settledPassback(stack, "dave", older)).passback.state).toBe("superseded");
    expect((await lms.grades()).filter((g) => g.sourcedId === configSourcedId(lms, "dave")).map((g) => g.textString)).toEqual(["0.9"]);
  });

  it("keeps the best grade when the assignment's policy is best", async () => {
    const first = await gradeAndSettle(stack, "erin", 0.8, "1", "lab-best");
    expect(first.final.passback.state).toBe("delivered");
    const worse = await gradeAndSettle(stack, "erin", 0.4, "1", "lab-best");
    expect(worse.final.passback.state).toBe("superseded");
    expect((await lms.grades()).filter((g) => g.sourcedId === configSourcedId(lms, "erin", "block-best")).map((g) => g.textString)).toEqual(["0.8"]);
  });

  it("records but does not post grades of a section with post_grade off", async () => {
    const { final } = await gradeAndSettle(stack, "frank", 1, "quiet");
    expect(final.status).toBe("graded");
    expect(final.passback).toMatchObject({ state: "disabled", attempts: 0 });
    expect((await lms.requests()).some((r) => r.path.includes(":frank"))).toBe(false);
  });

  it("the LMS's check is real: a correctly signed body passes, the same request with a changed score is refused", async () => {
    const url = `${lms.url}/outcomes/check`;
    const send = async (signedXml: string, sentXml: string) => {
      const { authorization } = await signBodyRequest({ url, body: new TextEncoder().encode(signedXml), key: lms.key, secret: lms.secret });
      return (await fetch(url, { method: "POST", headers: { "content-type": "application/xml", authorization }, body: sentXml })).text();
    };
    const honest = replaceResultXml({ messageId: "check-1", sourcedId: "sid-check", score: 0.4 });
    expect(await send(honest, honest)).toContain("<imsx_codeMajor>success</imsx_codeMajor>");
    const tampered = honest.replace("0.4", "1.0");
    expect(await send(honest, tampered)).toContain("<imsx_codeMajor>failure</imsx_codeMajor>");
    expect((await lms.rejected()).map((r) => r.reason)).toContain("bad_body_hash");
    expect((await lms.grades()).filter((g) => g.sourcedId === "sid-check").map((g) => g.textString)).toEqual(["0.4"]);
  });
});

describe("a grade the LMS never acknowledges", () => {
  let lms: LmsStandin;
  let stack: Stack;

  beforeAll(async () => {
    lms = await LmsStandin.start();
    // A retry window of 1.5 s stands in for the production 24 h.
    stack = await startStack(lms, { PASSBACK_RETRY_WINDOW_MS: "1500" });
  });
  afterAll(async () => {
    await stopStack(stack);
    await lms?.stop();
  });

  it("is parked as dead with the last error, listed for staff, and delivered by an admin retry", async () => {
    await lms.failNext("failure", 1000);
    const { id, final } = await gradeAndSettle(stack, "alice", 0.75);
    expect(final.passback.state).toBe("dead");
    expect(final.passback.attempts).toBeGreaterThan(1);
    expect(final.passback.last_error).toMatch(/^failure: /);

    const admin = { authorization: `Bearer ${stack.credentials.admin}` };
    const dead = (await (await fetch(`${stack.gateway.url}/api/v1/admin/passbacks?state=dead`, { headers: admin })).json()) as { passbacks: Array<{ id: number; submission_id: string }> };
    const row = dead.passbacks.find((p) => p.submission_id === id)!;
    expect(row).toBeDefined();

    await lms.reset();
    const retry = await fetch(`${stack.gateway.url}/api/v1/admin/passbacks/${row.id}/retry`, { method: "POST", headers: admin });
    expect(retry.status).toBe(200);
    expect((await settledPassback(stack, "alice", id)).passback.state).toBe("delivered");
    expect((await lms.grades()).map((g) => [g.sourcedId, g.textString])).toEqual([[configSourcedId(lms, "alice"), "0.75"]]);
  });
});
