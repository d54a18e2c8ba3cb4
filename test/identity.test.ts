import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, configureAssignment, freePort, newCredentials, startGateway } from "../scripts/local-stack.js";
import { JupyterHub, loginAndAuthorize } from "./support/hub.js";

const SAMPLE = join(ROOT, "assignments", "sample");

/** A real JupyterHub and a gateway that trusts only it (no DEV_USER_TOKENS), with the sample assignment. */
async function startHubStack(label: string, users: string[], hubOptions: { loginViaProxy?: boolean } = {}) {
  const work = await mkdtemp(join(tmpdir(), `otter-edge-${label}-`));
  const port = await freePort();
  const hub = await JupyterHub.start({ gatewayUrl: `http://127.0.0.1:${port}`, ...hubOptions });
  for (const user of users) await hub.createUser(user);
  const credentials = newCredentials([]);
  const gateway = await startGateway({
    stateDir: join(work, "state"),
    credentials,
    port,
    vars: {
      HUB_API_URL: hub.apiUrl,
      HUB_OAUTH_CLIENT_ID: hub.clientId,
      HUB_OAUTH_CLIENT_SECRET: hub.serviceApiToken,
      SESSION_SECRET: randomBytes(32).toString("base64url"),
      HUB_ORIGINS: hub.url,
    },
  });
  await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(SAMPLE, "dist", "autograder.zip") });
  const notebook = await readFile(join(SAMPLE, "submissions", "full.ipynb"), "utf8");
  return { work, hub, credentials, gateway, notebook };
}
type HubStack = Awaited<ReturnType<typeof startHubStack>>;

async function stopHubStack(stack: HubStack | undefined) {
  await stack?.gateway.stop();
  await stack?.hub.stop();
  if (stack) await rm(stack.work, { recursive: true, force: true });
}

/** Students proven by a real JupyterHub (hub API tokens and hub OAuth), never by what a request says of itself. */
describe("identity from a real JupyterHub", () => {
  let stack: HubStack | undefined;
  let hub: JupyterHub;
  let credentials: Credentials;
  let gateway: Gateway;
  let notebook: string;

  beforeAll(async () => {
    stack = await startHubStack("identity", ["alice", "bob", "dave", "erin"]);
    ({ hub, credentials, gateway, notebook } = stack);
  });

  afterAll(() => stopHubStack(stack));

  const submit = (headers: Record<string, string>, body = `{"nb": ${notebook}}`, url = `${gateway.url}/api/v1/submissions`) =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body, redirect: "manual" });
  const error = async (res: Response) => ((await res.json()) as { error: string }).error;

  it("accepts a hub token and records the hub's name for it", async () => {
    const { token } = await hub.createToken("alice");
    const res = await submit({ authorization: `token ${token}` });
    expect(res.status).toBe(202);
    const { status_url } = (await res.json()) as { status_url: string };
    const status = (await (await fetch(status_url, { headers: { authorization: `Bearer ${token}` } })).json()) as { user: string; events: Array<{ detail: string }> };
    expect(status.user).toBe("alice");
    expect(status.events[0]!.detail).toBe("submitted by alice via hub-token");
  });

  it("refuses revoked and unknown tokens, a service's token, and a forged Referer", async () => {
    const revoked = await hub.createToken("alice");
    await hub.revokeToken("alice", revoked.id);
    for (const authorization of [`token ${revoked.token}`, "token not-a-hub-token", `token ${hub.serviceApiToken}`]) {
      const res = await submit({ authorization });
      expect(res.status).toBe(401);
      expect(await error(res)).toBe("invalid_credentials");
    }
    const referer = await submit({ referer: `${hub.url}/user/alice/notebooks/sample.ipynb` });
    expect([referer.status, await error(referer)]).toEqual([401, "unauthenticated"]);
  });

  it("caches the hub's answer: a token revoked after use still passes within HUB_TOKEN_CACHE_SECONDS", async () => {
    const { id, token } = await hub.createToken("erin");
    expect((await submit({ authorization: `token ${token}` })).status).toBe(202);
    await hub.revokeToken("erin", id);
    expect((await hub.whoami(token)).status).toBe(403); // the hub itself already refuses it
    expect((await submit({ authorization: `token ${token}` })).status).toBe(202); // answered from the 60 s cache
  });

  it("refuses a submission that names another user than the verified one", async () => {
    const { token } = await hub.createToken("bob");
    for (const [body, query] of [[`{"nb": ${notebook}, "user": "alice"}`, ""], [`{"nb": ${notebook}}`, "?user=alice"]] as const) {
      const res = await submit({ authorization: `token ${token}` }, body, `${gateway.url}/api/v1/submissions${query}`);
      expect([res.status, await error(res)]).toEqual([403, "user_mismatch"]);
    }
  });

  it("logs a student in through hub OAuth and accepts the session cookie it sets", async () => {
    const login = await fetch(`${gateway.url}/auth/login?next=/auth/whoami`, { redirect: "manual" });
    expect(login.status).toBe(302);
    const stateCookie = login.headers.getSetCookie().find((c) => c.startsWith("oe_oauth_state="))!.split(";")[0]!;
    const callback = await loginAndAuthorize("carol", hub.password, login.headers.get("location")!);
    expect(callback.startsWith(`${gateway.url}/auth/callback?`)).toBe(true);

    const done = await fetch(callback, { headers: { cookie: stateCookie }, redirect: "manual" });
    expect(done.status).toBe(302);
    expect(done.headers.get("location")).toBe("/auth/whoami");
    const setCookie = done.headers.getSetCookie().find((c) => c.startsWith("oe_session="))!;
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/Secure/i);
    expect(setCookie).toMatch(/SameSite=None/i);
    const session = setCookie.split(";")[0]!;

    const whoami = await fetch(`${gateway.url}/auth/whoami`, { headers: { cookie: session } });
    expect(await whoami.json()).toEqual({ user: "carol", via: "hub-session" });
    expect((await submit({ cookie: session })).status).toBe(202);

    // A session cookie whose value was changed no longer verifies.
    const forged = session.replace(/^oe_session=[^.]*/, `oe_session=${encodeURIComponent(JSON.stringify({ user: "alice", exp: 9e9 }))}`);
    const refused = await submit({ cookie: forged });
    expect([refused.status, await error(refused)]).toEqual([401, "invalid_credentials"]);
    // A callback without the state cookie set by /auth/login is refused.
    expect((await fetch(callback, { redirect: "manual" })).status).toBe(400);
  });

  it("shows a student signed in through hub OAuth their submission page, and sends anonymous visitors to hub login", async () => {
    const login = await fetch(`${gateway.url}/auth/login`, { redirect: "manual" });
    const stateCookie = login.headers.getSetCookie().find((c) => c.startsWith("oe_oauth_state="))!.split(";")[0]!;
    const callback = await loginAndAuthorize("erin", hub.password, login.headers.get("location")!);
    const done = await fetch(callback, { headers: { cookie: stateCookie }, redirect: "manual" });
    const session = done.headers.getSetCookie().find((c) => c.startsWith("oe_session="))!.split(";")[0]!;

    const res = await submit({ cookie: session });
    expect(res.status).toBe(202);
    const { id, page_url } = (await res.json()) as { id: string; page_url: string };
    expect(page_url).toBe(`${gateway.url}/s/${id}`);
    const page = await fetch(page_url, { headers: { cookie: session } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('data-state="queued"');

    const anonymous = await fetch(page_url, { redirect: "manual" });
    expect(anonymous.status).toBe(401);
    expect(await anonymous.text()).toContain(`id="hub-login" href="/auth/login?next=${encodeURIComponent(`/s/${id}`)}"`);
    // Another student's hub token does not open it.
    const { token } = await hub.createToken("bob");
    expect((await fetch(page_url, { headers: { authorization: `token ${token}` } })).status).toBe(403);
  });

  it("answers the Submit button's POST forwarded by the hub's proxy to /services/otter_grade/", async () => {
    const { token } = await hub.createToken("dave");
    const res = await submit({ authorization: `token ${token}` }, `{"nb": ${notebook}}`, `${hub.url}/services/otter_grade/`);
    expect(res.status).toBe(202);
    const body = (await res.json()) as { status_url: string };
    expect(body.status_url).toContain("/services/otter_grade/api/v1/submissions/");
  });

  it("allows CORS with credentials for the hub's origin only", async () => {
    const preflight = (origin: string) =>
      fetch(`${gateway.url}/api/v1/submissions`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" } });
    const allowed = await preflight(hub.url);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(hub.url);
    expect(allowed.headers.get("access-control-allow-credentials")).toBe("true");
    const other = await preflight("https://evil.example");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});

/**
 * The course's usual wiring: the gateway is reached only through the hub's proxy, under
 * /services/otter_grade/, and the hub's OAuth redirect uri is there too. A student who follows the
 * Submit answer's page link signs in without ever seeing the gateway's own origin.
 */
describe("students who reach the gateway only through the hub's proxy", () => {
  let stack: HubStack | undefined;
  let hub: JupyterHub;
  let gateway: Gateway;
  let notebook: string;

  beforeAll(async () => {
    stack = await startHubStack("identity-proxy", ["frank"], { loginViaProxy: true });
    ({ hub, gateway, notebook } = stack);
  });

  afterAll(() => stopHubStack(stack));

  it("signs in under the service's prefix and opens the submission page the Submit answer links to", async () => {
    const prefix = `${hub.url}/services/otter_grade`;
    const { token } = await hub.createToken("frank");
    const submitted = await fetch(`${prefix}/`, { method: "POST", headers: { "content-type": "application/json", authorization: `token ${token}` }, body: `{"nb": ${notebook}}` });
    expect(submitted.status).toBe(202);
    const { id, page_url } = (await submitted.json()) as { id: string; page_url: string };
    expect(page_url).toBe(`${prefix}/s/${id}`);

    // Without a session the page offers hub login, under the prefix (the proxy forwards nothing else).
    const anonymous = await fetch(page_url, { redirect: "manual" });
    expect(anonymous.status).toBe(401);
    const link = /id="hub-login" href="([^"]+)"/.exec(await anonymous.text())?.[1]?.replaceAll("&amp;", "&");
    expect(link).toBe(`/services/otter_grade/auth/login?next=${encodeURIComponent(`/services/otter_grade/s/${id}`)}`);

    const login = await fetch(`${hub.url}${link}`, { redirect: "manual" });
    expect(login.status).toBe(302);
    const stateCookie = login.headers.getSetCookie().find((c) => c.startsWith("oe_oauth_state="))!;
    expect(stateCookie).toMatch(/Path=\/services\/otter_grade\/auth/i);
    const callback = await loginAndAuthorize("frank", hub.password, login.headers.get("location")!);
    expect(callback.startsWith(`${prefix}/auth/callback?`)).toBe(true);

    const done = await fetch(callback, { headers: { cookie: stateCookie.split(";")[0]! }, redirect: "manual" });
    expect(done.status).toBe(302);
    expect(done.headers.get("location")).toBe(`/services/otter_grade/s/${id}`);
    const setCookie = done.headers.getSetCookie().find((c) => c.startsWith("oe_session="))!;
    // Scoped to the service: the students' own servers on the hub's origin never receive it.
    expect(setCookie).toMatch(/Path=\/services\/otter_grade(;|$)/i);

    const page = await fetch(page_url, { headers: { cookie: setCookie.split(";")[0]! } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(id);
  });
});
