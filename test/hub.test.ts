// The JupyterHub test fixture (test/support/hub.ts) against a real JupyterHub + configurable-http-proxy:
// what the gateway will rely on when it verifies students with the hub.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../scripts/local-stack.js";
import { JupyterHub, loginAndAuthorize } from "./support/hub.js";

// A stand-in for the gateway, registered as the hub service's url: records what the proxy forwards.
const forwarded: Array<{ method: string; url: string; headers: IncomingHttpHeaders; body: string }> = [];
let gateway: Server;
let gatewayUrl: string;
let hub: JupyterHub;

beforeAll(async () => {
  const port = await freePort();
  gateway = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      forwarded.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      res.writeHead(202, { "content-type": "application/json" }).end('{"id":"x"}');
    });
  });
  await new Promise<void>((r) => gateway.listen(port, "127.0.0.1", r));
  gatewayUrl = `http://127.0.0.1:${port}`;
  const started = Date.now();
  hub = await JupyterHub.start({ gatewayUrl, serviceApiToken: "otter-grade-service-token" });
  console.log(`JupyterHub ready in ${Date.now() - started} ms at ${hub.url}`);
});

afterAll(async () => {
  await hub?.stop();
  await new Promise((r) => gateway?.close(r));
});

describe("hub API tokens (GET /hub/api/user)", () => {
  it("identifies a user's token, and refuses it once revoked", async () => {
    await hub.createUser("alice");
    const { id, token } = await hub.createToken("alice", { expiresIn: 3600 });
    const ok = await hub.whoami(token);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ kind: "user", name: "alice", token_id: id });
    // `Bearer` works the same.
    const bearer = await fetch(`${hub.apiUrl}/user`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await bearer.json()) as { name: string }).name).toBe("alice");

    await hub.revokeToken("alice", id);
    expect(await hub.whoami(token)).toEqual({ status: 403, body: { status: 403, message: null } });
  });

  it("refuses unknown, missing and expired tokens with 403", async () => {
    expect((await hub.whoami("no-such-token-0123456789")).status).toBe(403);
    expect((await fetch(`${hub.apiUrl}/user`)).status).toBe(403);
    await hub.createUser("bob");
    const { token } = await hub.createToken("bob", { expiresIn: 1 });
    expect((await hub.whoami(token)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2100));
    expect((await hub.whoami(token)).status).toBe(403);
  });

  it("identifies the owner whatever the token's scopes; a service token is kind 'service'", async () => {
    // `scopes: []` gives a token with only the "identify" scopes: still enough for /hub/api/user.
    const { token } = await hub.createToken("alice", { scopes: [] });
    const me = await hub.whoami(token);
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ kind: "user", name: "alice", scopes: ["read:users:groups!user=alice", "read:users:name!user=alice"] });
    // The service's own api_token answers too, as the service: the gateway must require kind "user".
    const svc = await hub.whoami(hub.serviceApiToken);
    expect(svc).toMatchObject({ status: 200, body: { kind: "service", name: "otter_grade" } });
  });
});

describe("hub OAuth for the otter_grade service", () => {
  it("logs alice in, redirects back with a code, and the code buys a token that identifies her", async () => {
    const redirectUri = `${gatewayUrl}/auth/callback`;
    const authorize = `${hub.url}/hub/api/oauth2/authorize?${new URLSearchParams({ client_id: "service-otter_grade", redirect_uri: redirectUri, response_type: "code", state: "xyz" })}`;
    const location = new URL(await loginAndAuthorize("alice", hub.password, authorize));
    expect(`${location.origin}${location.pathname}`).toBe(redirectUri);
    expect(location.searchParams.get("state")).toBe("xyz");
    const code = location.searchParams.get("code")!;
    expect(code).toBeTruthy();

    // A wrong client secret is refused; the code is still good afterwards.
    expect((await hub.exchangeCode(code, redirectUri, "wrong-secret-123")).status).toBe(401);

    const res = await fetch(`${hub.apiUrl}/oauth2/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: "service-otter_grade", client_secret: "otter-grade-service-token", grant_type: "authorization_code", code, redirect_uri: redirectUri }),
    });
    expect(res.status).toBe(200);
    const token = (await res.json()) as { access_token: string; token_type: string; expires_in: number; scope: string };
    expect(token).toMatchObject({ token_type: "Bearer", expires_in: 14 * 24 * 3600 });
    expect(token.scope.split(" ").sort()).toEqual(["access:services!service=otter_grade", "read:users:groups!user", "read:users:name!user"]);
    const me = await hub.whoami(token.access_token);
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ kind: "user", name: "alice" });

    // A code is single-use.
    expect((await hub.exchangeCode(code, redirectUri)).status).toBe(400);
  });

  it("refuses a wrong password and a redirect_uri other than the registered one", async () => {
    await expect(loginAndAuthorize("alice", "not-the-password", hub.authorizeUrl("s1"))).rejects.toThrow(/login as alice: 403/);
    await expect(loginAndAuthorize("alice", hub.password, hub.authorizeUrl("s2", "http://127.0.0.1:1/elsewhere"))).rejects.toThrow(/authorize \(after login\): 400/);
  });
});

describe("the proxy route /services/otter_grade/", () => {
  it("forwards the Submit button's POST to the gateway with path, body and cookies unchanged", async () => {
    const nb = JSON.stringify({ nb: { cells: [], metadata: {}, nbformat: 4, nbformat_minor: 5 } });
    const res = await fetch(`${hub.url}/services/otter_grade/`, { method: "POST", headers: { "content-type": "application/json", cookie: "otter-edge-session=abc" }, body: nb });
    expect(res.status).toBe(202);
    const seen = forwarded.at(-1)!;
    expect(seen).toMatchObject({ method: "POST", url: "/services/otter_grade/", body: nb });
    expect(seen.headers).toMatchObject({ cookie: "otter-edge-session=abc", host: new URL(hub.url).host, "x-forwarded-for": expect.stringContaining("127.0.0.1"), "x-forwarded-proto": "http" });
  });
});
