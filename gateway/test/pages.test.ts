import { SELF, createExecutionContext, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../src/index.js";
import { ADMIN, ALICE, BASE, BOB, TestRunner, issueToken, setUpAssignment, submit, uniqueAssignment } from "./helpers.js";

/**
 * The HTML pages in workerd: who may see a submission's page, what a student sees of hidden tests,
 * escaping of values from notebooks and tokens, the staff assignment page and its retry button.
 */

const HOSTILE_NAME = `q1 <script>alert("name")</script>`;
const HOSTILE_OUTPUT = `<img src=x onerror="alert('out')"> & "quoted"`;
const HIDDEN_OUTPUT = "secret hidden case: is_palindrome('A man, a plan')";

/** A graded submission of alice whose results carry hostile test names and outputs. */
async function gradedSubmission(label: string) {
  const a = uniqueAssignment(label);
  await setUpAssignment(a);
  const runner = await TestRunner.connect(`runner-${label}`, { capacity: 1, otterVersions: [a.otterVersion] });
  const accepted = await submit(a);
  const lease = await runner.next("lease");
  runner.send({
    type: "result",
    lease: lease.lease,
    outcome: {
      kind: "graded",
      grade: {
        verdict: "graded",
        score: 0.5,
        points: 2,
        maxPoints: 4,
        message: "",
        tests: [
          { name: "Public Tests", score: 0, maxScore: 0, visibility: "visible", output: "q1 results: All test cases passed!" },
          { name: HOSTILE_NAME, score: 1, maxScore: 2, visibility: "visible", output: HOSTILE_OUTPUT },
          { name: "q2 </td><b>x", score: 1, maxScore: 2, visibility: "hidden", output: HIDDEN_OUTPUT },
        ],
      },
      timings: {},
    },
  });
  expect(await runner.next("ack")).toMatchObject({ accepted: true });
  runner.close();
  return { a, ...accepted };
}

// workerd has Headers.getSetCookie(); the workers-types version pinned here does not declare it.
const setCookies = (res: Response): string[] => (res.headers as unknown as { getSetCookie(): string[] }).getSetCookie();

/** The `name=value` of a Set-Cookie answer, for the next request's Cookie header. */
function cookieFrom(res: Response, name: string): string {
  const line = setCookies(res).find((l) => l.startsWith(`${name}=`));
  if (!line) throw new Error(`no ${name} cookie in ${res.status}: ${setCookies(res).join(" | ")}`);
  return line.split(";")[0]!;
}

function form(path: string, fields: Record<string, string>, headers: Record<string, string> = {}) {
  return SELF.fetch(`${BASE}${path}`, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: BASE, ...headers },
    body: new URLSearchParams(fields).toString(),
  });
}

async function devSession(token: string) {
  const res = await form("/auth/dev-login", { token });
  expect(res.status).toBe(303);
  expect(res.headers.get("location")).toBe("/auth/dev-login");
  return cookieFrom(res, "oe_dev_session");
}

async function staffSession(token: string) {
  const res = await form("/staff/login", { token, next: "/staff" });
  expect(res.status, await res.clone().text()).toBe(303);
  expect(res.headers.get("location")).toBe("/staff");
  const setCookie = setCookies(res).join(";");
  expect(setCookie).toMatch(/HttpOnly/i);
  expect(setCookie).toMatch(/SameSite=Lax/i);
  expect(setCookie).not.toContain(token);
  return cookieFrom(res, "oe_staff");
}

const page = (path: string, cookie?: string, headers: Record<string, string> = {}) =>
  SELF.fetch(`${BASE}${path}`, { redirect: "manual", headers: { ...(cookie ? { cookie } : {}), ...headers } });

describe("submission page /s/:id", () => {
  it("links the page from the 202 and shows the student their grade, escaped, without hidden output", async () => {
    const { id, page_url } = (await gradedSubmission("student")) as { id: string; page_url?: string };
    expect(page_url).toBe(`${BASE}/s/${id}`);

    const res = await page(`/s/${id}`, await devSession(ALICE));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    expect(res.headers.get("content-security-policy")).toMatch(/script-src 'nonce-[^']+'/);
    const body = await res.text();
    expect(body).toContain('data-state="graded"');
    expect(body).toContain("2 / 4");
    // Hostile values arrive as text, never as markup.
    expect(body).toContain("q1 &lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;");
    expect(body).toContain("&lt;img src=x onerror=&quot;alert(&#39;out&#39;)&quot;&gt; &amp; &quot;quoted&quot;");
    expect(body).not.toContain('<script>alert("name")');
    expect(body).not.toContain("<img src=x");
    expect(body).toContain("q2 &lt;/td&gt;&lt;b&gt;x");
    // The hidden test: its score, not its output.
    expect(body).not.toContain("secret hidden case");
    expect(body).not.toContain("A man, a plan");
    expect(body).toContain("Hidden test: its output is not shown.");
    // The only script is ours, with the CSP nonce.
    const nonce = /script-src 'nonce-([^']+)'/.exec(res.headers.get("content-security-policy")!)![1]!;
    expect([...body.matchAll(/<script\b[^>]*>/g)].map((m) => m[0])).toEqual([`<script nonce="${nonce}">`]);
  });

  it("answers the same for a hub-token client and under the hub's service prefix", async () => {
    const { id } = await gradedSubmission("bearer");
    const res = await page(`/services/otter_grade/s/${id}`, undefined, { authorization: `token ${ALICE}` });
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain(`data-live="/services/otter_grade/s/${id}/live"`);
    expect(body).not.toContain("secret hidden case");
  });

  it("refuses another student (403), and asks an anonymous visitor to sign in (401)", async () => {
    const { id } = await gradedSubmission("other");
    const bob = await page(`/s/${id}`, await devSession(BOB));
    expect(bob.status).toBe(403);
    const text = await bob.text();
    expect(text).toContain('id="error-code">forbidden<');
    expect(text).not.toContain("secret hidden case");
    expect(text).not.toContain("2 / 4");
    expect((await page(`/s/${id}/live`, await devSession(BOB))).status).toBe(403);

    const anonymous = await page(`/s/${id}`);
    expect(anonymous.status).toBe(401);
    const hint = await anonymous.text();
    expect(hint).toContain('id="error-code">unauthenticated<');
    expect(hint).toContain(`href="/staff/login?next=${encodeURIComponent(`/s/${id}`)}"`);
    expect((await page(`/s/${id}/live`)).status).toBe(401);

    // A forged cookie (unsigned) is nobody.
    expect((await page(`/s/${id}`, `oe_dev_session=${encodeURIComponent(JSON.stringify({ user: "alice", exp: 9e9 }))}`)).status).toBe(401);
    expect((await page(`/s/not-a-submission`, await devSession(ALICE))).status).toBe(404);
  });

  it("serves the live fragment that the page's script polls, final only once nothing can change", async () => {
    const a = uniqueAssignment("live");
    await setUpAssignment(a);
    const { id } = await submit(a); // no runner for this version: it stays queued
    const cookie = await devSession(ALICE);
    const live = await page(`/s/${id}/live`, cookie);
    expect(live.status).toBe(200);
    const fragment = await live.text();
    expect(fragment).toMatch(/^<section id="status" data-state="queued" data-final="false">/);
    expect(fragment).not.toContain("<html");

    // Graded but the gradebook has not answered: still live. Delivered: final.
    const graded = await gradedSubmission("live-graded");
    const setPassback = (state: string) => env.DB.prepare(`UPDATE passbacks SET state = ?1 WHERE submission_id = ?2`).bind(state, graded.id).run();
    await setPassback("retrying");
    const waiting = await (await page(`/s/${graded.id}/live`, cookie)).text();
    expect(waiting).toContain('data-state="graded" data-final="false"');
    expect(waiting).toContain('data-passback="retrying"');
    await setPassback("delivered");
    const done = await (await page(`/s/${graded.id}/live`, cookie)).text();
    expect(done).toContain('data-state="graded" data-final="true"');
    expect(done).toContain('data-passback="delivered"');
  });

  it("shows course staff everything, refuses other courses' staff, and forgets a revoked token", async () => {
    const { id, a } = await gradedSubmission("staff");
    const staff = await issueToken({ kind: "staff", name: "ta-own", course: a.course });
    const res = await page(`/s/${id}`, await staffSession(staff.token));
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain("secret hidden case: is_palindrome(&#39;A man, a plan&#39;)");
    expect(body).toContain('id="student">alice<');

    const other = await issueToken({ kind: "staff", name: "ta-other", course: "another-course" });
    const refused = await page(`/s/${id}`, await staffSession(other.token));
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('id="error-code">forbidden_course<');

    const revocable = await issueToken({ kind: "staff", name: "ta-leaving", course: a.course });
    const cookie = await staffSession(revocable.token);
    expect((await page(`/s/${id}`, cookie)).status).toBe(200);
    expect((await SELF.fetch(`${BASE}/api/v1/admin/tokens/${revocable.id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(200);
    expect((await page(`/s/${id}`, cookie)).status).toBe(401);

    // Signing out clears the cookie in the browser.
    const out = await form("/staff/logout", {}, { cookie: await staffSession(staff.token) });
    expect(out.status).toBe(303);
    expect(out.headers.get("location")).toBe("/staff/login");
    expect(setCookies(out).find((l) => l.startsWith("oe_staff="))).toMatch(/Max-Age=0/i);
  });
});

describe("sign-in forms", () => {
  it("refuses wrong tokens, cross-site posts and, without DEV_USER_TOKENS, development sign-in", async () => {
    const wrongStaff = await form("/staff/login", { token: "oe_staff_nope", next: "/staff" });
    expect(wrongStaff.status).toBe(401);
    expect(setCookies(wrongStaff)).toEqual([]);
    expect(await wrongStaff.text()).toContain("invalid_staff_token");
    // A student token is not a staff token.
    expect((await form("/staff/login", { token: ALICE })).status).toBe(401);

    const wrongDev = await form("/auth/dev-login", { token: "nope" });
    expect(wrongDev.status).toBe(401);
    expect(await wrongDev.text()).toContain('id="error-code">invalid_credentials<');

    const crossSite = await form("/auth/dev-login", { token: ALICE }, { origin: "https://evil.example" });
    expect(crossSite.status).toBe(403);
    expect(await crossSite.text()).toContain("cross_origin_form");

    // An off-site `next` is ignored.
    const offsite = await form("/auth/dev-login", { token: ALICE, next: "//evil.example/x" });
    expect(offsite.headers.get("location")).toBe("/auth/dev-login");

    const production = { ...env, DEV_USER_TOKENS: undefined };
    const disabled = await worker.fetch(
      new Request(`${BASE}/auth/dev-login`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: BASE }, body: `token=${ALICE}` }),
      production,
      createExecutionContext(),
    );
    expect(disabled.status).toBe(404);
    expect(await disabled.text()).toContain("dev_login_disabled");
    // And a dev session cookie minted earlier counts for nothing there.
    const cookie = await devSession(ALICE);
    const { id } = await gradedSubmission("prod");
    const later = await worker.fetch(new Request(`${BASE}/s/${id}`, { headers: { cookie } }), production, createExecutionContext());
    expect(later.status).toBe(401);
  });
});

describe("staff assignment page", () => {
  it("shows pass rates, scores and runners, escaped, and only to the course's staff", async () => {
    const { a } = await gradedSubmission("dash");
    const staff = await issueToken({ kind: "staff", name: "ta-dash", course: a.course });
    const cookie = await staffSession(staff.token);
    const path = `/staff/courses/${a.course}/assignments/${a.assignment}`;

    const index = await (await page("/staff", cookie)).text();
    expect(index).toContain(`href="${path}"`);

    const res = await page(path, cookie);
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain("1 submissions from 1 students: 1 graded");
    expect(body).toContain(`data-test="${"q1 &lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;"}"`);
    expect(body).not.toContain("<script>alert");
    // Worth no points: no pass rate for otter's Public Tests summary.
    expect(body).not.toContain('data-test="Public Tests"');
    expect(body).toMatch(/50–59\.9 %<\/td><td><meter min="0" max="1" value="1">/);
    expect(body).toContain('id="dead-passbacks-none"');

    const other = await issueToken({ kind: "staff", name: "ta-dash-other", course: "another-course" });
    expect((await page(path, await staffSession(other.token))).status).toBe(403);
    expect((await page(path)).status).toBe(401);
    const unknown = await page(`/staff/courses/${a.course}/assignments/no-such-lab`, cookie);
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toContain('id="error-code">unknown_assignment<');
    // Bearer tokens work too, for scripts.
    expect((await page(path, undefined, { authorization: `Bearer ${staff.token}` })).status).toBe(200);
  });

  it("lists a dead passback with a retry button that only the course's staff can press", async () => {
    const { id, a } = await gradedSubmission("dead");
    await env.DB.prepare(`UPDATE passbacks SET state = 'dead', last_error = ?1 WHERE submission_id = ?2`).bind(`LMS said <b>no</b>`, id).run();
    const { pid } = (await env.DB.prepare(`SELECT id AS pid FROM passbacks WHERE submission_id = ?1`).bind(id).first<{ pid: number }>())!;
    const staff = await issueToken({ kind: "staff", name: "ta-dead", course: a.course });
    const cookie = await staffSession(staff.token);

    const body = await (await page(`/staff/courses/${a.course}/assignments/${a.assignment}`, cookie)).text();
    expect(body).toContain(`data-passback-id="${pid}"`);
    expect(body).toContain("LMS said &lt;b&gt;no&lt;/b&gt;");
    expect(body).toContain(`action="/staff/courses/${a.course}/passbacks/${pid}/retry"`);

    const state = async () => (await env.DB.prepare(`SELECT state FROM passbacks WHERE id = ?1`).bind(pid).first<{ state: string }>())!.state;
    const retry = (c: string, course = a.course, headers: Record<string, string> = {}) =>
      form(`/staff/courses/${course}/passbacks/${pid}/retry`, { back: a.assignment }, { cookie: c, ...headers });

    // Another course's staff: refused by the URL's course and, through it, by the passback's.
    const other = await staffSession((await issueToken({ kind: "staff", name: "ta-dead-other", course: "another-course" })).token);
    expect((await retry(other)).status).toBe(403);
    expect((await retry(other, "another-course")).status).toBe(403);
    expect((await retry(cookie, a.course, { origin: "https://evil.example" })).status).toBe(403);
    expect((await retry("")).status).toBe(401);
    expect((await form(`/staff/courses/${a.course}/passbacks/abc/retry`, {}, { cookie })).status).toBe(404);
    expect((await retry(cookie, a.course, { origin: "not a url" })).status).toBe(403);
    expect(await state()).toBe("dead");

    const ok = await retry(cookie);
    expect(ok.status).toBe(303);
    expect(ok.headers.get("location")).toBe(`/staff/courses/${a.course}/assignments/${a.assignment}`);
    expect(await state()).not.toBe("dead");
  });
});
