import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, type Runner, adminCli, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook } from "../scripts/local-stack.js";
import { LmsStandin } from "./support/lms.js";

/**
 * The pages in a real browser: Debian's Chromium, headless, driven by playwright-core, against the
 * gateway under wrangler dev, a real runner grading in Docker with otter, and the LMS stand-in.
 * Waits are on DOM state (playwright's waitForSelector), never on time.
 */
const SAMPLE = join(ROOT, "assignments", "sample");
const CHROMIUM = process.env.OTTER_EDGE_CHROMIUM ?? "/usr/bin/chromium";
// Texts only in the sample's hidden test cases (q2's np.isclose check, q3's palindrome sentences).
const HIDDEN_CASE_TEXTS = ["np.isclose", "A man, a plan", "No lemon"];

describe("pages in headless Chromium", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let runner: Runner;
  let lms: LmsStandin;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  /** The second submission's page: its grade is refused by the LMS and retried by staff. */
  let refusedPage = "";

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-browser-"));
    credentials = newCredentials(["alice", "bob"]);
    lms = await LmsStandin.start();
    gateway = await startGateway({
      stateDir: join(work, "state"),
      credentials,
      // A grade the LMS refuses once is dead at once (1 ms retry window): the staff page's retry button has work.
      vars: { SESSION_SECRET: randomBytes(24).toString("base64url"), LTI_CONSUMERS: `${lms.key}:${lms.secret}`, EDX_URL: lms.url, PASSBACK_RETRY_WINDOW_MS: "1" },
    });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(SAMPLE, "dist", "autograder.zip"), timeoutSeconds: 300 });
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 1 });
    // Root (CI) cannot use Chromium's own sandbox; the browser only visits our local gateway.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: process.getuid?.() === 0 ? ["--no-sandbox"] : [] });
  });

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await runner?.stop();
    await gateway?.stop();
    await lms?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A fresh browser profile signed in as a student through the development sign-in form. */
  async function studentBrowser(user: string) {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${gateway.url}/auth/dev-login`);
    await page.fill('input[name="token"]', credentials.students[user]!);
    await Promise.all([page.waitForSelector("#signed-in-as"), page.click('button[type="submit"]')]);
    expect(await page.textContent("#signed-in-as")).toBe(user);
    return page;
  }

  it("a student watches their submission go from queued to graded and delivered without reloading", async () => {
    const page = await studentBrowser("alice");
    const submitted = await submitNotebook(gateway.url, credentials.students.alice!, join(SAMPLE, "submissions", "partial.ipynb"));
    expect(submitted.page_url).toBe(`${gateway.url}/s/${submitted.id}`);

    const response = await page.goto(submitted.page_url);
    expect(response!.status()).toBe(200);
    // Record every state the live region shows, and mark this document: a reload would lose both.
    const first = await page.getAttribute("#status", "data-state");
    // (In-page code as strings: this project's TypeScript has no DOM types.)
    await page.evaluate(`(() => {
      window.notReloaded = true;
      window.seen = [document.querySelector("#status").getAttribute("data-state")];
      new MutationObserver(() => {
        const state = document.querySelector("#status")?.getAttribute("data-state");
        if (state && window.seen.at(-1) !== state) window.seen.push(state);
      }).observe(document.getElementById("live"), { childList: true, subtree: true });
    })()`);
    expect(["queued", "leased"]).toContain(first);

    await page.waitForSelector('#status[data-state="graded"]', { timeout: 300_000 });
    await page.waitForSelector('#passback[data-passback="delivered"]', { timeout: 120_000 });
    await page.waitForSelector('#status[data-final="true"]');

    const { seen, notReloaded, navigations } = (await page.evaluate(
      `({ seen: window.seen, notReloaded: window.notReloaded === true, navigations: performance.getEntriesByType("navigation").length })`,
    )) as { seen: string[]; notReloaded: boolean; navigations: number };
    expect(notReloaded).toBe(true);
    expect(navigations).toBe(1);
    expect(seen[0]).not.toBe("graded");
    expect(seen.at(-1)).toBe("graded");

    // partial.ipynb: q1 full, q2 and q3 half (their hidden cases fail). Visible feedback shown...
    expect(await page.textContent("#score")).toContain("3 / 5");
    expect(await page.textContent('tr[data-test="Public Tests"] pre')).toContain("q1 results: All test cases passed!");
    for (const q of ["q2", "q3"]) {
      expect(await page.getAttribute(`tr[data-test="${q}"]`, "data-visibility")).toBe("hidden");
      expect(await page.textContent(`tr[data-test="${q}"] .hidden-output`)).toContain("not shown");
    }
    // ...hidden outputs nowhere in the document.
    const html = await page.content();
    for (const text of HIDDEN_CASE_TEXTS) expect(html).not.toContain(text);
    expect((await lms.grades()).at(-1)!.textString).toBe("0.6");
  });

  it("another student gets 403 for that page", async () => {
    await lms.failNext("failure", 1);
    const submitted = await submitNotebook(gateway.url, credentials.students.alice!, join(SAMPLE, "submissions", "zero.ipynb"));
    const bob = await studentBrowser("bob");
    const response = await bob.goto(submitted.page_url);
    expect(response!.status()).toBe(403);
    expect(await bob.textContent("#error-code")).toBe("forbidden");
    expect(await bob.locator("#status").count()).toBe(0);
    refusedPage = submitted.page_url;
  });

  it("staff sign in, see the assignment page and a student's hidden output, and resend a dead grade", async () => {
    const { token } = await adminCli<{ token: string }>(gateway.url, credentials.admin, ["tokens", "create", "staff", "ta-anna", "--course", "demo101"]);
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${gateway.url}/staff`);
    expect(await page.textContent("#error-code")).toBe("invalid_staff_token");
    await page.click("#staff-login");
    await page.fill('input[name="token"]', token);
    await Promise.all([page.waitForURL(`${gateway.url}/staff`), page.click('button[type="submit"]')]);
    // The cookie holds no token, and scripts cannot read it.
    const [cookie] = (await context.cookies()).filter((c) => c.name === "oe_staff");
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Lax" });
    expect(cookie!.value).not.toContain(token);

    // The refused grade, seen live from the submission's page until it is dead.
    await page.goto(refusedPage);
    await page.waitForSelector('#passback[data-passback="dead"]', { timeout: 300_000 });
    expect(await page.textContent("#student")).toBe("alice");

    await page.goto(`${gateway.url}/staff`);
    await Promise.all([page.waitForURL("**/staff/courses/demo101/assignments/sample"), page.click('a[href="/staff/courses/demo101/assignments/sample"]')]);
    expect(await page.textContent("h1")).toContain("sample");
    expect(await page.textContent("#totals")).toMatch(/^2 submissions from 1 students: 2 graded/);
    // Per-test pass rates over alice's latest graded submission (zero.ipynb): every test missed.
    expect(await page.locator("#test-rates tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-test")).sort())).toEqual(["q1", "q2", "q3"]);
    expect(await page.locator("#test-rates tbody tr td:nth-child(2)").allTextContents()).toEqual([" 0 %", " 0 %", " 0 %"]);
    expect(await page.locator("#runners tbody tr").count()).toBe(1);

    // Retry now: back on the same page with no dead grade left, and the LMS takes it.
    const row = page.locator("#dead-passbacks tbody tr");
    expect(await row.count()).toBe(1);
    expect(await row.textContent()).toContain("alice");
    await Promise.all([page.waitForSelector("#dead-passbacks-none"), row.locator('button[type="submit"]').click()]);
    expect(page.url()).toBe(`${gateway.url}/staff/courses/demo101/assignments/sample`);
    await page.goto(refusedPage);
    await page.waitForSelector('#passback[data-passback="delivered"]', { timeout: 120_000 });
    expect((await lms.grades()).at(-1)!.textString).toBe("0");

    // A submission of the course, as staff: everything, hidden outputs included (partial.ipynb fails q3's hidden case).
    await page.goto(`${gateway.url}/staff/courses/demo101/assignments/sample`);
    await Promise.all([page.waitForURL("**/s/*"), page.click("#recent a >> nth=-1")]);
    expect(await page.textContent("#student")).toBe("alice");
    expect(await page.textContent('tr[data-test="q3"] pre')).toContain("A man, a plan");
  });
});
