import { type Context, Hono } from "hono";
import { html } from "hono/html";
import { type AppEnv, type Authenticator, authenticators } from "../auth/authenticate.js";
import { devLoginEnabled, devSessionAuthenticator, endBrowserSessions, staffFromCookie, startDevSession, startStaffSession } from "../auth/browser-sessions.js";
import { type Principal, assertCourse, staffPrincipal } from "../auth/service-tokens.js";
import { bearerToken } from "../auth/tokens.js";
import { servicePrefixOf } from "../hub-service.js";
import { ApiError, internalErrorResponse } from "../errors.js";
import { retryPassback } from "../passback/retry.js";
import { type Viewer, assertCanSee, readSubmission } from "../submissions/detail.js";
import { assignmentStats, staffAssignments } from "../pages/assignment-stats.js";
import { type Html, errorPage, pageResponse } from "../pages/layout.js";
import { assignmentPage, devSignInForm, signInForm, staffIndex } from "../pages/staff.js";
import { liveFragment, submissionPage } from "../pages/submission.js";
import { log } from "../log.js";

/**
 * The HTML pages: a submission's live page for its student and course staff (`/s/:id`), and the
 * staff pages (`/staff/…`). Errors are pages too, with the JSON API's status and code.
 */
export const pageRoutes = new Hono<AppEnv>();

pageRoutes.onError((err, c) => (err instanceof ApiError ? signInHint(c, err) : internalErrorResponse(c, err)));

/** Only paths on this gateway: an open redirect would carry a fresh session to someone else's site. */
function safeNext(next: unknown, fallback: string): string {
  return typeof next === "string" && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : fallback;
}

/** A 401 page says how to sign in: staff form, hub login, and the development form where it is on. */
function signInHint(c: Context<AppEnv>, err: ApiError) {
  if (err.status !== 401) return errorPage(c, err);
  const next = c.req.path;
  // Through the hub's proxy, the login must run under the service's prefix too (where its cookie lives).
  const hubLogin = c.env.HUB_OAUTH_CLIENT_ID ? html`<p><a id="hub-login" href="${servicePrefixOf(next)}/auth/login?next=${encodeURIComponent(next)}">Sign in with JupyterHub</a></p>` : "";
  const dev = devLoginEnabled(c.env) && !next.startsWith("/staff") ? html`<p><a href="/auth/dev-login?next=${encodeURIComponent(next)}">Development sign-in</a></p>` : "";
  return errorPage(c, err, html`${hubLogin}${dev}<p><a id="staff-login" href="/staff/login?next=${encodeURIComponent(next)}">Staff sign-in</a></p>`);
}

/** Staff by page cookie or bearer token; null when neither. */
async function staffViewer(c: Context<AppEnv>): Promise<Principal | null> {
  return (await staffFromCookie(c)) ?? (await staffPrincipal(c.env, bearerToken(c.req.header("authorization"))));
}

// Students: whatever the API accepts (hub session cookie, hub or dev tokens), plus the dev page session.
const STUDENT_CHAIN: Authenticator[] = [...authenticators, devSessionAuthenticator];

/** The same verification as `authenticate()`, answering with an error page instead of JSON. */
async function viewer(c: Context<AppEnv>): Promise<Viewer> {
  const principal = await staffViewer(c);
  if (principal) return { principal };
  const active = STUDENT_CHAIN.filter((a) => a.configured(c.env));
  let refused = false;
  for (const a of active) {
    const identity = await a.authenticate(c);
    if (identity === "invalid") refused = true;
    else if (identity) return { identity };
  }
  if (refused) throw new ApiError(401, "invalid_credentials", "Your sign-in is no longer valid; sign in again.");
  throw new ApiError(401, "unauthenticated", "Sign in to see this page.");
}

function hostOf(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}

/** State-changing form posts must come from our own pages (SameSite=Lax already keeps the cookie off cross-site POSTs). */
function assertSameOrigin(c: Context): void {
  const origin = c.req.header("origin");
  if (origin && hostOf(origin) === new URL(c.req.url).host) return;
  if (!origin && c.req.header("sec-fetch-site") !== "cross-site") return; // non-browser clients send no Origin
  throw new ApiError(403, "cross_origin_form", "This form must be sent from this gateway's own page.");
}

async function formField(c: Context, name: string): Promise<string> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/x-www-form-urlencoded|^multipart\/form-data/i.test(type)) throw new ApiError(415, "unsupported_media_type", "Send the form as a browser would.");
  const value = (await c.req.parseBody())[name];
  return typeof value === "string" ? value.trim() : "";
}

// ---- the submission page ---------------------------------------------------------------------

export function submissionPageRoutes() {
  const app = new Hono<AppEnv>();
  app.onError((err, c) => (err instanceof ApiError ? signInHint(c, err) : internalErrorResponse(c, err)));
  app.get("/s/:id", async (c) => {
    const who = await viewer(c);
    const detail = await readSubmission(c.env.DB, c.req.param("id"));
    assertCanSee(who, detail);
    return pageResponse(c, { title: `${detail.row.assignment} submission`, body: (n) => submissionPage(who, detail, `${c.req.path}/live`, n) });
  });
  // What the page's script fetches: the changing part only, escaped here like the page.
  app.get("/s/:id/live", async (c) => {
    const who = await viewer(c);
    const detail = await readSubmission(c.env.DB, c.req.param("id"));
    assertCanSee(who, detail);
    c.header("cache-control", "no-store");
    c.header("x-content-type-options", "nosniff");
    // Opened directly, the fragment may run nothing at all.
    c.header("content-security-policy", "default-src 'none'; frame-ancestors 'none'");
    return c.html(liveFragment(who, detail));
  });
  return app;
}

// ---- sign-in -----------------------------------------------------------------------------------

// The form, and who the development session says you are (the API's /auth/whoami does not read it).
pageRoutes.get("/auth/dev-login", async (c) => {
  if (!devLoginEnabled(c.env)) throw new ApiError(404, "dev_login_disabled", "Development sign-in is off on this gateway.");
  const current = await devSessionAuthenticator.authenticate(c);
  const user = current && current !== "invalid" ? current.user : null;
  return pageResponse(c, { title: "Development sign-in", body: () => devSignInForm(safeNext(c.req.query("next"), "/auth/dev-login"), user) });
});

pageRoutes.post("/auth/dev-login", async (c) => {
  assertSameOrigin(c);
  const user = await startDevSession(c, await formField(c, "token"));
  log.info("dev page sign-in", { user });
  return c.redirect(safeNext(await formField(c, "next"), "/auth/dev-login"), 303);
});

pageRoutes.get("/staff/login", (c) => pageResponse(c, { title: "Staff sign-in", body: () => signInForm(safeNext(c.req.query("next"), "/staff")) }));

pageRoutes.post("/staff/login", async (c) => {
  assertSameOrigin(c);
  const next = safeNext(await formField(c, "next"), "/staff");
  try {
    const principal = await startStaffSession(c, await formField(c, "token"));
    log.info("staff page sign-in", { name: principal.name, role: principal.role });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    return pageResponse(c, { title: "Staff sign-in", status: 401, body: () => signInForm(next, `${err.message} (${err.code})`) });
  }
  return c.redirect(next, 303);
});

pageRoutes.post("/staff/logout", (c) => {
  assertSameOrigin(c);
  endBrowserSessions(c);
  return c.redirect("/staff/login", 303);
});

// ---- staff pages -------------------------------------------------------------------------------

async function requireStaffViewer(c: Context<AppEnv>): Promise<Principal> {
  const principal = await staffViewer(c);
  if (!principal) throw new ApiError(401, "invalid_staff_token", "Sign in with a staff token of this course.");
  return principal;
}

const staffPage = (c: Context<AppEnv>, title: string, body: Html) => pageResponse(c, { title, body: () => body });

pageRoutes.get("/staff", async (c) => {
  const principal = await requireStaffViewer(c);
  return staffPage(c, "Assignments", staffIndex(principal, await staffAssignments(c.env, principal.role === "staff" ? principal.course : null)));
});

pageRoutes.get("/staff/courses/:course/assignments/:assignment", async (c) => {
  const principal = await requireStaffViewer(c);
  const { course, assignment } = c.req.param();
  assertCourse(principal, course);
  const stats = await assignmentStats(c.env, course, assignment);
  if (!stats) throw new ApiError(404, "unknown_assignment", `Course "${course}" has no assignment "${assignment}".`);
  return staffPage(c, `${assignment} · ${course}`, assignmentPage(principal, course, assignment, stats));
});

/** The retry button: the admin API's retry, for the signed-in staff of the passback's course. */
pageRoutes.post("/staff/courses/:course/passbacks/:id/retry", async (c) => {
  assertSameOrigin(c);
  const principal = await requireStaffViewer(c);
  const course = c.req.param("course");
  assertCourse(principal, course);
  const back = await formField(c, "back");
  const view = await retryPassback(c.env, principal, Number(c.req.param("id")));
  log.info("passback retried from the staff page", { id: view.id, by: principal.name });
  return c.redirect(back ? `/staff/courses/${encodeURIComponent(course)}/assignments/${encodeURIComponent(back)}` : "/staff", 303);
});
