/**
 * A real JupyterHub for tests (test/hub/jupyterhub_config.py; JupyterHub and configurable-http-proxy
 * versions pinned in test/hub/requirements.txt and package.json). The gateway verifies students
 * against it exactly as against a course's hub:
 *
 * - API tokens: `GET {hub}/hub/api/user` with `Authorization: token <t>` (or `Bearer <t>`).
 *   200 → the owner's model; a user token gives `{"kind": "user", "name": "alice", "token_id", "scopes", …}`,
 *   a service's token gives `{"kind": "service", "name": "otter_grade", …}` (so check `kind`).
 *   Revoked, expired, unknown or missing token → 403 `{"status": 403, "message": null}` (not 401).
 *   Any token may call it: the hub adds the "identify" scopes itself, so even a token with
 *   `scopes: []` or only `read:users:name!user` identifies its owner.
 * - Browser OAuth, the gateway being the hub service `otter_grade` (client id `service-otter_grade`):
 *   see {@link loginAndAuthorize} and {@link JupyterHub.exchangeCode}.
 *
 * Start: `.otter-edge/venv/bin/jupyterhub -f test/hub/jupyterhub_config.py` in a fresh temp dir
 * (sqlite db, cookie secret, proxy token), detached, on three free loopback ports (public proxy,
 * hub, proxy API). Ready about 2 s later when `GET {url}/hub/api/` answers through the proxy.
 * JupyterHub starts the proxy in its own session (its own process group), so `stop()` sends SIGTERM
 * to the hub (which stops the proxy), and then makes sure the proxy pid is gone too.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { freePort, ROOT, waitFor } from "../../scripts/local-stack.js";

const JUPYTERHUB = join(ROOT, ".otter-edge", "venv", "bin", "jupyterhub");
const CONFIG = join(ROOT, "test", "hub", "jupyterhub_config.py");
const CHP = join(ROOT, "node_modules", ".bin", "configurable-http-proxy");

/** The gateway's OAuth client id at the hub: JupyterHub requires the `service-` prefix. */
export const OTTER_GRADE_CLIENT_ID = "service-otter_grade";

export interface HubStartOptions {
  /** The gateway's URL: registered as the `otter_grade` service's `url` (the proxy then forwards
   * `/services/otter_grade/…` to it) and `oauth_redirect_uri` = `${gatewayUrl}/auth/callback`.
   * Without it the service has no proxy route and the redirect uri is `http://127.0.0.1:9/auth/callback`.
   * If nothing answers at this URL when the hub starts, the hub waits `serviceTimeoutSeconds` first. */
  gatewayUrl?: string;
  /** The `otter_grade` service's `api_token`, which is also its OAuth `client_secret`. At least 8 characters. */
  serviceApiToken?: string;
  /** The password every user logs in with (at least 8 characters). */
  password?: string;
  /** Only these user names may log in (default: any name). */
  allowedUsers?: string[];
  /** Default 3. */
  serviceTimeoutSeconds?: number;
  /** The service's `oauth_redirect_uri` on the hub's origin, `/services/otter_grade/auth/callback`:
   * students sign in through the hub's proxy instead of on the gateway's origin. */
  loginViaProxy?: boolean;
  /** Hub and proxy log: kept in memory (`output()`), or also printed. */
  output?: "pipe" | "inherit";
}

export interface HubToken {
  id: string;
  token: string;
}

export class JupyterHub {
  /** Where `/hub/…` is served (the proxy), e.g. http://127.0.0.1:40123. */
  readonly url: string;
  /** `${url}/hub/api` */
  readonly apiUrl: string;
  /** The `otter_grade` service's OAuth redirect_uri. */
  readonly redirectUri: string;
  readonly clientId = OTTER_GRADE_CLIENT_ID;

  private constructor(
    port: number,
    readonly stateDir: string,
    readonly password: string,
    /** Token of the hub service `otter-edge-test-admin`, which has the `admin` role. */
    readonly adminToken: string,
    /** `otter_grade`'s api_token = OAuth client_secret. */
    readonly serviceApiToken: string,
    readonly gatewayUrl: string | undefined,
    readonly process: ChildProcess,
    private readonly log: string[],
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.apiUrl = `${this.url}/hub/api`;
    this.redirectUri = `${(gatewayUrl ?? "http://127.0.0.1:9").replace(/\/+$/, "")}/auth/callback`;
  }

  static async start(opts: HubStartOptions = {}): Promise<JupyterHub> {
    for (const [what, path] of [["jupyterhub", JUPYTERHUB], ["configurable-http-proxy", CHP]] as const) {
      if (!existsSync(path)) {
        throw new Error(`${what} not found at ${path}: run \`bash scripts/setup.sh\` and \`.otter-edge/venv/bin/pip install -r test/hub/requirements.txt\``);
      }
    }
    const stateDir = await mkdtemp(join(tmpdir(), "otter-edge-hub-"));
    const [port, hubPort, proxyApiPort] = [await freePort(), await freePort(), await freePort()];
    const secret = () => randomBytes(24).toString("hex");
    const password = opts.password ?? "otter-edge-test-password";
    const adminToken = secret();
    const serviceApiToken = opts.serviceApiToken ?? secret();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      // configurable-http-proxy is `#!/usr/bin/env node`: make sure this Node is found.
      PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
      OTTER_EDGE_HUB_STATE_DIR: stateDir,
      OTTER_EDGE_HUB_PORT: String(port),
      OTTER_EDGE_HUB_API_PORT: String(hubPort),
      OTTER_EDGE_HUB_PROXY_API_PORT: String(proxyApiPort),
      OTTER_EDGE_HUB_PASSWORD: password,
      OTTER_EDGE_HUB_USERS: (opts.allowedUsers ?? []).join(","),
      OTTER_EDGE_HUB_ADMIN_TOKEN: adminToken,
      OTTER_EDGE_HUB_SERVICE_TOKEN: serviceApiToken,
      OTTER_EDGE_HUB_SERVICE_TIMEOUT: String(opts.serviceTimeoutSeconds ?? 3),
      OTTER_EDGE_GATEWAY_URL: opts.gatewayUrl ?? "",
      OTTER_EDGE_HUB_LOGIN_VIA_PROXY: opts.loginViaProxy ? "1" : "",
    };
    const child = spawn(JUPYTERHUB, ["-f", CONFIG], { cwd: stateDir, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const log: string[] = [];
    for (const stream of [child.stdout!, child.stderr!]) {
      stream.on("data", (d: Buffer) => {
        log.push(d.toString());
        if (opts.output === "inherit") process.stderr.write(d);
      });
    }
    const hub = new JupyterHub(port, stateDir, password, adminToken, serviceApiToken, opts.gatewayUrl, child, log);
    exitGuard.add(hub);
    try {
      // The proxy has no default route: /hub/api/ answers through it only once the hub has added its
      // routes (its own and the services'), which it does right before "JupyterHub is now running".
      await waitFor(
        async () => (await fetch(`${hub.apiUrl}/`).catch(() => null))?.status === 200 && hub.output().includes("JupyterHub is now running"),
        60_000,
        () => `JupyterHub did not start:\n${hub.output().slice(-4000)}`,
        () => child.exitCode !== null || child.signalCode !== null,
      );
      hub.proxyPid = hub.readProxyPid();
    } catch (err) {
      await hub.stop();
      throw err;
    }
    return hub;
  }

  private proxyPid: number | undefined;
  private stopped = false;

  /** The proxy's pid, from the pid file the hub writes when it starts it (and removes at shutdown). */
  private readProxyPid(): number | undefined {
    try {
      return Number(readFileSync(join(this.stateDir, "jupyterhub-proxy.pid"), "utf8").trim()) || undefined;
    } catch {
      return undefined;
    }
  }

  /** Everything the hub and its proxy logged so far. */
  output(): string {
    return this.log.join("");
  }

  /** A call to the hub's REST API as the admin service. */
  async api(method: string, path: string, body?: unknown): Promise<Response> {
    return fetch(`${this.apiUrl}${path}`, {
      method,
      headers: { authorization: `token ${this.adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  private async apiJson<T>(method: string, path: string, expect: number[], body?: unknown): Promise<T> {
    const res = await this.api(method, path, body);
    const text = await res.text();
    if (!expect.includes(res.status)) throw new Error(`hub ${method} ${path}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : null) as T;
  }

  /** `POST /hub/api/users/{name}` (201; an existing user, 409, is fine too). */
  async createUser(name: string): Promise<void> {
    await this.apiJson("POST", `/users/${encodeURIComponent(name)}`, [201, 409]);
  }

  /**
   * `POST /hub/api/users/{name}/tokens` with JSON `{note, expires_in?, scopes?}` → 201
   * `{id: "a7", token: "<32 hex>", scopes, expires_at, …}`. The user must exist (else 403). Without
   * `scopes` the token has all of the user's permissions (role `user` = `self` plus here
   * `access:services!service=otter_grade`). Token ids are `a<row id>` and a deleted token's id can be
   * given again to the next token.
   */
  async createToken(user: string, opts: { expiresIn?: number; scopes?: string[]; note?: string } = {}): Promise<HubToken> {
    const body: Record<string, unknown> = { note: opts.note ?? "otter-edge test" };
    if (opts.expiresIn !== undefined) body.expires_in = opts.expiresIn;
    if (opts.scopes !== undefined) body.scopes = opts.scopes;
    const model = await this.apiJson<{ id: string; token: string }>("POST", `/users/${encodeURIComponent(user)}/tokens`, [201], body);
    return { id: model.id, token: model.token };
  }

  /** `DELETE /hub/api/users/{name}/tokens/{token_id}` → 204. */
  async revokeToken(user: string, id: string): Promise<void> {
    await this.apiJson("DELETE", `/users/${encodeURIComponent(user)}/tokens/${encodeURIComponent(id)}`, [204]);
  }

  /** What the gateway does with a student's token: `GET /hub/api/user`, `Authorization: token <t>`. */
  async whoami(token: string): Promise<{ status: number; body: Record<string, any> }> {
    const res = await fetch(`${this.apiUrl}/user`, { headers: { authorization: `token ${token}` } });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  }

  /**
   * Where the gateway sends a browser to log in:
   * `GET {hub}/hub/api/oauth2/authorize?client_id=service-otter_grade&redirect_uri=<exactly the
   * registered oauth_redirect_uri>&response_type=code&state=<opaque>`.
   */
  authorizeUrl(state: string, redirectUri = this.redirectUri): string {
    const q = new URLSearchParams({ client_id: this.clientId, redirect_uri: redirectUri, response_type: "code", state });
    return `${this.apiUrl}/oauth2/authorize?${q}`;
  }

  /**
   * The gateway's token exchange: `POST {hub}/hub/api/oauth2/token`,
   * `Content-Type: application/x-www-form-urlencoded`, fields `client_id=service-otter_grade`,
   * `client_secret=<the service's api_token>`, `grant_type=authorization_code`, `code`,
   * `redirect_uri` (the same as at authorize). 200 → `{access_token, token_type: "Bearer",
   * expires_in: 1209600, scope: "read:users:groups!user access:services!service=otter_grade read:users:name!user"}`
   * (no refresh_token); the access_token is a hub token of the user, to use with `GET /hub/api/user`
   * like any other. A wrong client_secret → 401; a code works once (again → 400). Returns status
   * and JSON body as they come.
   */
  async exchangeCode(code: string, redirectUri = this.redirectUri, clientSecret = this.serviceApiToken): Promise<{ status: number; body: Record<string, any> }> {
    const res = await fetch(`${this.apiUrl}/oauth2/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: this.clientId, client_secret: clientSecret, grant_type: "authorization_code", code, redirect_uri: redirectUri }),
    });
    const text = await res.text();
    let body: Record<string, any>;
    try {
      body = JSON.parse(text) as Record<string, any>;
    } catch {
      body = { text };
    }
    return { status: res.status, body };
  }

  /** SIGTERM to the hub (it stops its proxy and exits in well under a second), SIGKILL after 10 s;
   * then the proxy, in its own process group, is killed if it is somehow still there. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    exitGuard.delete(this);
    const child = this.process;
    this.proxyPid ??= this.readProxyPid();
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      signalGroup(child.pid!, "SIGTERM");
      const timer = setTimeout(() => signalGroup(child.pid!, "SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (this.proxyPid && isProxy(this.proxyPid)) signalGroup(this.proxyPid, "SIGKILL");
    await rm(this.stateDir, { recursive: true, force: true });
  }

  /** Synchronous last resort (the test process exits without stop()): kill hub and proxy, remove the state dir. */
  killNow(): void {
    this.proxyPid ??= this.readProxyPid();
    if (this.process.exitCode === null && this.process.signalCode === null) signalGroup(this.process.pid!, "SIGKILL");
    if (this.proxyPid && isProxy(this.proxyPid)) signalGroup(this.proxyPid, "SIGKILL");
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** True when `pid` is still a configurable-http-proxy (and not a recycled pid). */
function isProxy(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("configurable-http-proxy");
  } catch {
    return false;
  }
}

/** Hubs not stopped when the test process exits are killed then, not left behind. */
const exitGuard = new Set<JupyterHub>();
process.once("exit", () => {
  for (const hub of exitGuard) hub.killNow();
});

/** A minimal cookie jar for one host: name → value, honouring deletion (Max-Age=0 / past Expires).
 * It ignores Path: every cookie goes with every request (a browser would not send the hub's
 * `Path=/hub/` cookies to `/services/…`). */
export class CookieJar {
  readonly cookies = new Map<string, string>();

  store(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair!.indexOf("=");
      if (eq < 0) continue;
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v = ""] = a.split("=").map((s) => s.trim());
        if (k!.toLowerCase() === "max-age") return Number(v) <= 0;
        if (k!.toLowerCase() === "expires") return Date.parse(v) < Date.now();
        return false;
      });
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  /**
   * A browser's page navigation (no redirects followed). Not `fetch`: undici's fetch always sends
   * `Sec-Fetch-Mode: cors`, and for such requests JupyterHub (5+) sets no `_xsrf` cookie on its
   * login page, so the login form's token is then checked against one made anew at the POST, and
   * matches only while both fall in the same second (the tokens carry a timestamp): the login
   * failed with a bare 403 about once in 150 tries. A browser's navigation sends `navigate`.
   */
  async fetch(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = { "sec-fetch-mode": "navigate", "sec-fetch-site": "same-origin", "sec-fetch-dest": "document", ...init.headers };
    if (this.cookies.size) headers.cookie = this.header();
    const res = await new Promise<Response>((resolve, reject) => {
      const req = httpRequest(url, { method: init.method ?? "GET", headers }, (answer) => {
        const chunks: Buffer[] = [];
        answer.on("data", (chunk: Buffer) => chunks.push(chunk));
        answer.on("error", reject);
        answer.on("end", () => {
          const responseHeaders = new Headers();
          for (let i = 0; i < answer.rawHeaders.length; i += 2) responseHeaders.append(answer.rawHeaders[i]!, answer.rawHeaders[i + 1]!);
          const status = answer.statusCode ?? 0;
          resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: responseHeaders }));
        });
      });
      req.on("error", reject);
      req.end(init.body);
    });
    this.store(res);
    return res;
  }
}

function unescapeHtml(s: string): string {
  return s.replace(/&amp;/g, "&").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">");
}

/**
 * A browser's hub OAuth login, done with fetch and a cookie jar. Given the URL the gateway redirects
 * a browser to (`{hub}/hub/api/oauth2/authorize?client_id=service-otter_grade&redirect_uri=…&response_type=code&state=…`),
 * returns the hub's final redirect to the client's redirect_uri (`…/auth/callback?code=…&state=…`)
 * without following it. The steps, as JupyterHub 6.1 answers them:
 *
 * 1. `GET /hub/api/oauth2/authorize?…` without a hub session → 302 `Location: /hub/login?next=<the
 *    authorize path and query, URL-encoded>`. (With a session, from `jar`: straight to step 4's answer.)
 * 2. `GET /hub/login?next=…` → 200 HTML; sets cookie `_xsrf` (Path=/hub/). The form is
 *    `<form action="/hub/login?next=…" method="post">` with `<input type="hidden" name="_xsrf" value="…">`,
 *    `username` and `password`. The xsrf token is tied to the client's IP and User-Agent.
 * 3. `POST` the form action, `application/x-www-form-urlencoded` `_xsrf=…&username=…&password=…`, with the
 *    `_xsrf` cookie → 302 `Location: <next>`, cookies `jupyterhub-hub-login` (the hub session,
 *    Path=/hub/) and `jupyterhub-session-id`. A wrong password → 403 with the login form again.
 * 4. `GET` the authorize URL with those cookies → 302 `Location: <redirect_uri>?code=…&state=…`
 *    (the service has `oauth_no_confirm`; without it the hub answers 200 with an "Authorize access"
 *    page). A redirect_uri other than the registered one → 400; a user whose roles lack
 *    `access:services!service=otter_grade` → 403 (the test config grants it to role `user`).
 */
export async function loginAndAuthorize(user: string, password: string, authorizeUrl: string, jar = new CookieJar()): Promise<string> {
  const redirectUri = new URL(authorizeUrl).searchParams.get("redirect_uri");
  if (!redirectUri) throw new Error(`no redirect_uri in ${authorizeUrl}`);
  const isCallback = (location: string) => location.startsWith(redirectUri.split("?")[0]!);
  const fail = async (step: string, res: Response) => {
    const body = await res.text();
    // The hub's own reason (a refused login says it in the form), rather than the page's long head.
    const reason = /class="login_error"[^>]*>([^<]*)</.exec(body)?.[1]?.trim();
    return new Error(`hub OAuth ${step}: ${res.status} ${res.headers.get("location") ?? ""}${reason ? ` (${reason})` : ""}\n${body.slice(Math.max(0, body.indexOf("<body"))).slice(0, 2000)}`);
  };

  // 1. authorize without a session → login page
  let res = await jar.fetch(authorizeUrl);
  let location = res.headers.get("location");
  if (res.status === 302 && location && isCallback(location)) return location;
  if (res.status !== 302 || !location) throw await fail("authorize (before login)", res);
  const loginUrl = new URL(location, authorizeUrl).toString();

  // 2. the login form: its action and _xsrf field (and the _xsrf cookie, in the jar)
  res = await jar.fetch(loginUrl);
  if (res.status !== 200) throw await fail("login page", res);
  const html = await res.text();
  const action = /<form[^>]*\baction="([^"]*)"[^>]*method="post"/i.exec(html)?.[1];
  const xsrf = /<input[^>]*name="_xsrf"[^>]*value="([^"]*)"/i.exec(html)?.[1];
  if (action === undefined || xsrf === undefined) throw new Error(`no login form with _xsrf on ${loginUrl}`);

  // 3. log in
  res = await jar.fetch(new URL(unescapeHtml(action), loginUrl).toString(), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ _xsrf: unescapeHtml(xsrf), username: user, password }).toString(),
  });
  location = res.headers.get("location");
  if (res.status !== 302 || !location) throw await fail(`login as ${user}`, res);

  // 4. authorize with the session → redirect to the client with ?code=…&state=…
  res = await jar.fetch(new URL(location, loginUrl).toString());
  location = res.headers.get("location");
  if (res.status !== 302 || !location || !isCallback(location)) throw await fail("authorize (after login)", res);
  return location;
}
