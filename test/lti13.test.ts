import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotatedToolKeys } from "../gateway/cli/lti13.js";
import { type Credentials, type Gateway, ROOT, adminCli, newCredentials, startGateway, waitFor } from "../scripts/local-stack.js";
import { PlatformStandin } from "./support/platform.js";
import { ScriptedRunner } from "./support/scripted-runner.js";

/**
 * LTI 1.3 end to end against a platform stand-in written apart from the gateway (Python, PyJWT and
 * cryptography): OIDC login and launch on the real Worker (wrangler dev, local D1), then grades
 * posted through AGS from the passback outbox with a client_credentials token the stand-in issues
 * after verifying the tool's client assertion against the tool's own JWKS URL.
 * The grader is the scripted runner (the test decides each grade); grading itself is tested elsewhere.
 */
const AUTOGRADER = join(ROOT, "assignments", "sample", "dist", "autograder.zip");
const CLIENT_ID = "otter-edge-canvas";
const DEPLOYMENT = "deployment-1";
const LINEITEM = (id: number) => `/lineitems/${id}/lineitem?type_id=3`;

let work: string;
let platform: PlatformStandin;
let gateway: Gateway;
let credentials: Credentials;
let runner: ScriptedRunner;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "otter-edge-lti13-"));
  platform = await PlatformStandin.start();
  credentials = newCredentials(["alice", "bob", "carol", "dave"]);
  gateway = await startGateway({
    stateDir: join(work, "state"),
    credentials,
    vars: {
      // Rotated once: tool-key-2 signs, tool-key-1 is still served for assertions signed before.
      LTI13_TOOL_KEYS: await rotatedToolKeys(await rotatedToolKeys(undefined, "tool-key-1"), "tool-key-2"),
      LTI13_JWKS_REFETCH_MIN_MS: "0",
      PASSBACK_TIMEOUT_MS: "3000",
      PASSBACK_BACKOFF_BASE_MS: "200",
      PASSBACK_BACKOFF_MAX_MS: "1000",
    },
  });
  const admin = { authorization: `Bearer ${credentials.admin}` };
  const config = await fetch(`${gateway.url}/api/v1/admin/config`, {
    method: "PUT",
    headers: { ...admin, "content-type": "application/json" },
    body: JSON.stringify({ lti13: { "1": { assignments: { lab: "block-lab" } } } }),
  });
  expect(config.status).toBe(200);
  const upload = await fetch(`${gateway.url}/api/v1/admin/assignments/lti13/lab/autograder`, { method: "PUT", headers: admin, body: await readFile(AUTOGRADER) });
  expect(upload.status).toBe(200);
  runner = await ScriptedRunner.connect(gateway.url, credentials.runner, 4);

  await platform.registerTool({ client_id: CLIENT_ID, deployment_id: DEPLOYMENT, jwks_url: `${gateway.url}/.well-known/jwks.json`, redirect_uris: [`${gateway.url}/lti/1p3/launch`] });
  const registered = await adminCli(gateway.url, credentials.admin, [
    "lti13", "register", "--issuer", platform.url, "--client-id", CLIENT_ID, "--auth-url", `${platform.url}/auth`,
    "--token-url", `${platform.url}/token`, "--jwks-url", `${platform.url}/jwks`, "--deployment-id", DEPLOYMENT,
  ]);
  expect(registered).toMatchObject({ issuer: platform.url, client_id: CLIENT_ID, deployment_ids: [DEPLOYMENT] });
}, 180_000);

afterAll(async () => {
  runner?.close();
  await gateway?.stop();
  await platform?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

interface Launched {
  status: number;
  body: string;
  idToken: string;
  state: string;
}

/** The browser's part: the platform's login initiation, the tool's redirect, the platform's form post back. */
async function launch(options: Record<string, unknown>): Promise<Launched> {
  const initiation = await platform.prepareLaunch({ client_id: CLIENT_ID, deployment_id: DEPLOYMENT, resource_link_id: "rl-lab", custom: { otter_course: "lti13", otter_assignment: "lab" }, ...options });
  const login = await fetch(`${gateway.url}/lti/1p3/login?${new URLSearchParams(initiation as unknown as Record<string, string>)}`, { redirect: "manual" });
  expect(login.status, await login.clone().text()).toBe(302);
  const auth = await fetch(login.headers.get("location")!);
  const form = await auth.text();
  expect(auth.status, form).toBe(200);
  const field = (name: string) => new RegExp(`name="${name}"\\s+value="([^"]*)"`).exec(form)?.[1] ?? new RegExp(`value="([^"]*)"\\s+name="${name}"`).exec(form)?.[1];
  const idToken = field("id_token")!;
  const state = field("state")!;
  expect(idToken, form).toBeTruthy();
  return { ...(await postLaunch(idToken, state)), idToken, state };
}

async function postLaunch(idToken: string, state: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${gateway.url}/lti/1p3/launch`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ id_token: idToken, state }) });
  return { status: res.status, body: await res.text() };
}

async function submitAndGrade(user: string, score: number): Promise<string> {
  const res = await fetch(`${gateway.url}/api/v1/submissions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${credentials.students[user]}` },
    body: JSON.stringify({ nb: { nbformat: 4, nbformat_minor: 5, metadata: { otter_service: { course: "lti13", section: "1", assignment: "lab" } }, cells: [] } }),
  });
  expect(res.status).toBe(202);
  const { id } = (await res.json()) as { id: string };
  runner.grade(await runner.leaseFor(id), score);
  return id;
}

async function passbackOf(user: string, id: string): Promise<Record<string, any>> {
  let last: Record<string, any> = {};
  await waitFor(
    async () => {
      const res = await fetch(`${gateway.url}/api/v1/submissions/${id}`, { headers: { authorization: `Bearer ${credentials.students[user]}` } });
      last = ((await res.json()) as Record<string, any>).passback ?? {};
      return ["delivered", "dead", "superseded", "disabled"].includes(last.state);
    },
    60_000,
    () => `passback of ${id} did not settle: ${JSON.stringify(last)}`,
  );
  return last;
}

describe("LTI 1.3 launch and AGS grade passback against an independent platform", () => {
  it("serves the public halves of the tool's keys, the signing one first and the one it replaced after", async () => {
    const jwks = (await (await fetch(`${gateway.url}/.well-known/jwks.json`)).json()) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.map((k) => k.kid)).toEqual(["tool-key-2", "tool-key-1"]);
    expect(jwks.keys[0]).toMatchObject({ kty: "RSA", alg: "RS256", use: "sig" });
    for (const key of jwks.keys) expect(Object.keys(key)).not.toContain("d");
  });

  it("a launch links the student; their grade reaches the line item's scores endpoint as an AGS score", async () => {
    const linked = await launch({ sub: "platform-user-alice", login_hint: "alice-hint", lti1p1_user_id: "alice", lineitem: `${platform.url}${LINEITEM(7)}` });
    expect(linked.status, linked.body).toBe(200);
    expect(linked.body).toContain("You are linked");

    const id = await submitAndGrade("alice", 0.7);
    expect(await passbackOf("alice", id)).toMatchObject({ state: "delivered", attempts: 1, posted_score: 0.7 });
    const scores = (await platform.scores()).filter((s) => s.userId === "platform-user-alice");
    expect(scores).toHaveLength(1);
    // /scores before the query string; the platform's own id of the student; a fraction of 1, as LTI 1.1 posts it.
    expect(scores[0]).toMatchObject({ lineitem: `${platform.url}${LINEITEM(7)}`, scoreGiven: 0.7, scoreMaximum: 1, activityProgress: "Completed", gradingProgress: "FullyGraded", client_id: CLIENT_ID });
    expect(scores[0]!.timestamp).toMatch(/\.\d{3}Z$/);
  });

  it("without the lti1p1 claim the student is named by sub", async () => {
    expect((await launch({ sub: "bob", lineitem: `${platform.url}${LINEITEM(8)}` })).status).toBe(200);
    const id = await submitAndGrade("bob", 1);
    expect(await passbackOf("bob", id)).toMatchObject({ state: "delivered" });
    expect((await platform.scores()).filter((s) => s.userId === "bob").map((s) => s.scoreGiven)).toEqual([1]);
  });

  it("refuses a replayed launch: its state is used up, and its nonce does not match a new login", async () => {
    const first = await launch({ sub: "carol", lineitem: `${platform.url}${LINEITEM(9)}` });
    expect(first.status).toBe(200);
    const again = await postLaunch(first.idToken, first.state);
    expect(again.status).toBe(401);
    expect(JSON.parse(again.body).error).toBe("unknown_state");

    // A fresh login's state with the old id_token: the nonce is the old login's.
    const initiation = await platform.prepareLaunch({ client_id: CLIENT_ID, deployment_id: DEPLOYMENT, sub: "carol", resource_link_id: "rl-lab" });
    const login = await fetch(`${gateway.url}/lti/1p3/login?${new URLSearchParams(initiation as unknown as Record<string, string>)}`, { redirect: "manual" });
    const freshState = new URL(login.headers.get("location")!).searchParams.get("state")!;
    const replayed = await postLaunch(first.idToken, freshState);
    expect(replayed.status).toBe(401);
    expect(JSON.parse(replayed.body).error).toBe("nonce_mismatch");
  });

  it.each([
    ["signed with a key the platform's JWKS lacks", { sign_with: "unknown" }, "unknown_kid"],
    ["expired", { exp_in: -600 }, "expired_id_token"],
    ["for another tool", { audience: "someone-else" }, "wrong_audience"],
    ["with several audiences and another azp", { audience: [CLIENT_ID, "other"], overrides: { azp: "other" } }, "wrong_audience"],
    ["from an unregistered deployment", { overrides: { "https://purl.imsglobal.org/spec/lti/claim/deployment_id": "deployment-9" } }, "unknown_deployment"],
    ["of another message type", { overrides: { "https://purl.imsglobal.org/spec/lti/claim/message_type": "LtiDeepLinkingRequest" } }, "unsupported_message_type"],
    ["of another LTI version", { overrides: { "https://purl.imsglobal.org/spec/lti/claim/version": "1.2.0" } }, "unsupported_version"],
  ])("refuses a launch %s", async (_what, options, error) => {
    const refused = await launch({ sub: "dave", lineitem: `${platform.url}${LINEITEM(10)}`, ...options });
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(JSON.parse(refused.body).error).toBe(error);
  });

  it("takes launches signed with the platform's new key after a rotation (JWKS fetched again for the new kid)", async () => {
    const { kid } = await platform.rotate(false);
    expect(kid).not.toBe("platform-1");
    const linked = await launch({ sub: "dave", lineitem: `${platform.url}${LINEITEM(11)}` });
    expect(linked.status, linked.body).toBe(200);
  });

  it("gets a new token when the platform drops the cached one mid-outbox, and retries an outage until the score is in", async () => {
    expect((await launch({ sub: "dave", lineitem: `${platform.url}${LINEITEM(12)}` })).status).toBe(200);
    const tokensBefore = (await platform.tokenRequests()).filter((t) => t.ok).length;
    await platform.expireTokens();
    const first = await submitAndGrade("dave", 0.5);
    expect(await passbackOf("dave", first)).toMatchObject({ state: "delivered", attempts: 1 });
    expect((await platform.tokenRequests()).filter((t) => t.ok).length).toBe(tokensBefore + 1);

    await platform.failNext("scores", "http_503", 2);
    const second = await submitAndGrade("dave", 0.9);
    expect(await passbackOf("dave", second)).toMatchObject({ state: "delivered", attempts: 3, posted_score: 0.9 });
    const daves = (await platform.scores()).filter((s) => s.userId === "dave");
    expect(daves.map((s) => s.scoreGiven)).toEqual([0.5, 0.9]);
    // Each try had its own timestamp (the platform refuses one not newer than the last it holds).
    expect(Date.parse(daves[1]!.timestamp)).toBeGreaterThan(Date.parse(daves[0]!.timestamp));
    // Only one token was requested for all of it: the cache serves the retries.
    expect((await platform.tokenRequests()).filter((t) => t.ok).length).toBe(tokensBefore + 1);
  });
});
