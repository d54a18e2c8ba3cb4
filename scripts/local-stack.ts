/**
 * Starts otter-edge on this machine: the gateway under `wrangler dev` (local workerd with local D1,
 * R2 and Durable Object state) and runner agents, wired together with fresh credentials. Used by
 * `npm start` and by the end-to-end tests, so both run exactly the same system.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PASSED_BUILD_ARGS } from "../runner/src/grading/environment-images.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules", ".bin", "wrangler");
const TSX = join(ROOT, "node_modules", ".bin", "tsx");

/** Keeps wrangler and Miniflare from reaching out to the internet. */
export const QUIET_WRANGLER = { WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_UPDATE_NOTIFIER: "1" };

export interface Credentials {
  admin: string;
  /** Issued by startGateway through the admin CLI, as an operator would. */
  runner: string;
  students: Record<string, string>;
}

export function newCredentials(students: string[]): Credentials {
  const token = () => randomBytes(18).toString("base64url");
  return { admin: token(), runner: "", students: Object.fromEntries(students.map((s) => [s, token()])) };
}

/** Runs the `otter-edge` admin CLI against a gateway; returns its JSON output. */
export async function adminCli<T = Record<string, unknown>>(gatewayUrl: string, adminToken: string, args: string[]): Promise<T> {
  const out = await run(TSX, [join(ROOT, "gateway", "cli", "otter-edge.ts"), "--gateway", gatewayUrl, ...args], { OTTER_EDGE_ADMIN_TOKEN: adminToken });
  return JSON.parse(out) as T;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

/** Runs a child to completion; rejects with its output when it fails. */
export async function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(cmd, args, { cwd, env: { ...process.env, ...QUIET_WRANGLER, ...env }, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

export interface Gateway {
  url: string;
  stateDir: string;
  process: ChildProcess;
  /** Rows from the gateway's local D1, read with `wrangler d1 execute --local`. */
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  stop(): Promise<void>;
}

export async function applyMigrations(stateDir: string, root = ROOT): Promise<void> {
  await run(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", stateDir], {}, root);
}

/**
 * `root`: the checkout whose gateway to run (default this one); benchmarks pass another checkout
 * (a git worktree of an earlier commit) to compare two builds side by side.
 * `host`: `wrangler` (default) runs `wrangler dev`, as a developer would; `workerd` runs the bundled
 * Worker on Miniflare alone (scripts/workerd-gateway.ts), without wrangler's dev proxy and its
 * per-request logging, which the intake benchmark uses to measure the gateway rather than the harness.
 */
export async function startGateway(opts: { stateDir: string; credentials: Credentials; port?: number; vars?: Record<string, string>; output?: "inherit" | "pipe"; root?: string; host?: "wrangler" | "workerd"; inspectorPort?: number }): Promise<Gateway> {
  const root = opts.root ?? ROOT;
  await mkdir(opts.stateDir, { recursive: true });
  await applyMigrations(opts.stateDir, root);
  const port = opts.port ?? (await freePort());
  const envFile = join(opts.stateDir, "gateway.env");
  const secrets = {
    // Test and bench stacks submit far faster than students; `npm start` turns the limits on.
    SUBMIT_RATE_LIMITS: "off",
    ADMIN_TOKEN: opts.credentials.admin,
    DEV_USER_TOKENS: Object.entries(opts.credentials.students)
      .map(([user, token]) => `${user}:${token}`)
      .join(","),
    ...opts.vars,
  };
  await writeFile(envFile, Object.entries(secrets).map(([k, v]) => `${k}=${v}`).join("\n") + "\n", { mode: 0o600 });
  const [cmd, args] =
    opts.host === "workerd"
      ? [TSX, [join(ROOT, "scripts", "workerd-gateway.ts"), "--root", root, "--state", opts.stateDir, "--port", String(port), "--env-file", envFile, ...(opts.inspectorPort ? ["--inspector-port", String(opts.inspectorPort)] : [])]]
      : [WRANGLER, ["dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(opts.inspectorPort ?? (await freePort())), "--persist-to", opts.stateDir, "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "log"]];
  const child = spawn(cmd, args, { cwd: root, env: { ...process.env, ...QUIET_WRANGLER }, stdio: ["ignore", opts.output ?? "pipe", opts.output ?? "pipe"], detached: true });
  const output: string[] = [];
  if (child.stdout) child.stdout.on("data", (d: Buffer) => output.push(d.toString()));
  if (child.stderr) child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
  keepLog(child, `gateway-${port}`);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok === true, 60_000, () => `gateway did not start:\n${output.join("").slice(-4000)}`, () => child.exitCode !== null);
  opts.credentials.runner = (await adminCli<{ token: string }>(url, opts.credentials.admin, ["tokens", "create", "runner", "local-runner"])).token;
  return {
    url,
    stateDir: opts.stateDir,
    process: child,
    async query<T>(sql: string) {
      // A second process on the same local SQLite file: while the running gateway writes, the read can
      // meet SQLITE_BUSY (seen in CI). That lock is transient; anything else fails at once.
      for (let attempt = 1; ; attempt++) {
        try {
          const out = await run(WRANGLER, ["d1", "execute", "DB", "--local", "--persist-to", opts.stateDir, "--json", "--command", sql], {}, root);
          return (JSON.parse(out) as Array<{ results: T[] }>)[0]!.results;
        } catch (err) {
          if (attempt >= 8 || !/SQLITE_BUSY|database is locked/.test(String(err))) throw err;
          await new Promise((r) => setTimeout(r, 250 * attempt));
        }
      }
    },
    async stop() {
      await stopProcess(child);
    },
  };
}

/**
 * With OTTER_EDGE_STACK_LOGS=<dir>, every gateway's and runner's output is also written to a file
 * there, so a stalled end-to-end test can be read after the fact (LOG_LEVEL=debug for the runner's
 * slot offers).
 */
function keepLog(child: ChildProcess, name: string): void {
  const dir = process.env.OTTER_EDGE_STACK_LOGS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const file = createWriteStream(join(dir, `${name}.log`));
  child.stdout?.pipe(file, { end: false });
  child.stderr?.pipe(file, { end: false });
}

export interface Runner {
  process: ChildProcess;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

let runnersStarted = 0;

const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

function packageIndexAccess(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of PASSED_BUILD_ARGS) if (process.env[name]) env[name] = process.env[name]!;
  const ca = process.env.OTTER_EDGE_BUILD_CA_BUNDLE ?? (existsSync(HOST_CA_BUNDLE) ? HOST_CA_BUNDLE : undefined);
  if (ca) env.OTTER_EDGE_BUILD_CA_BUNDLE = ca;
  return env;
}

export function startRunner(opts: { gatewayUrl: string; token: string; capacity?: number; cacheDir: string; env?: Record<string, string>; args?: string[]; output?: "inherit" | "pipe" }): Runner {
  const child = spawn(TSX, [join(ROOT, "runner", "src", "cli.ts"), ...(opts.args ?? [])], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
      OTTER_EDGE_GATEWAY_URL: opts.gatewayUrl,
      OTTER_EDGE_RUNNER_TOKEN: opts.token,
      // Unique per runner on this engine: a runner removes containers left under its own name at start-up,
      // so two stacks sharing the engine (tests run side by side) must not share a name. Pass
      // OTTER_EDGE_RUNNER_NAME in env to restart "the same" runner.
      OTTER_EDGE_RUNNER_NAME: `local-runner-${process.pid}-${++runnersStarted}`,
      OTTER_EDGE_CAPACITY: String(opts.capacity ?? 2),
      // Several test runners share this machine: no fixed metrics port unless a test asks for one.
      OTTER_EDGE_METRICS_PORT: "0",
      OTTER_EDGE_CACHE_DIR: opts.cacheDir,
      ...(process.env.LOG_LEVEL ? { LOG_LEVEL: process.env.LOG_LEVEL } : {}),
      // Passed through so that a test file can be run with the warm pool on, or on a test build of
      // the grading image: OTTER_EDGE_WARM_POOL=3 npx vitest run test/hostile.test.ts
      ...(process.env.OTTER_EDGE_WARM_POOL ? { OTTER_EDGE_WARM_POOL: process.env.OTTER_EDGE_WARM_POOL } : {}),
      ...(process.env.OTTER_EDGE_IMAGE_CONTRACT ? { OTTER_EDGE_IMAGE_CONTRACT: process.env.OTTER_EDGE_IMAGE_CONTRACT } : {}),
      // Assignment environments are built with the package index reachable the way this host reaches
      // it: its proxy and pip settings, and its CA bundle (a TLS-inspecting proxy signs with it).
      ...packageIndexAccess(),
      ...opts.env,
    },
    stdio: ["ignore", opts.output ?? "pipe", opts.output ?? "pipe"],
    detached: true,
  });
  const lines: string[] = [];
  child.stdout?.on("data", (d: Buffer) => lines.push(d.toString()));
  child.stderr?.on("data", (d: Buffer) => lines.push(d.toString()));
  keepLog(child, `runner-${child.pid}`);
  return { process: child, output: () => lines.join(""), stop: (signal) => stopProcess(child, signal) };
}

/** Loads a course config and uploads an assignment's autograder with the `otter-edge` admin CLI, as staff would. */
export async function configureAssignment(
  gatewayUrl: string,
  adminToken: string,
  a: { configFile: string; course: string; assignment: string; autograderZip: string; timeoutSeconds?: number; isolation?: "kernel" | "grader" },
) {
  await adminCli(gatewayUrl, adminToken, ["config", "load", a.configFile]);
  const isolation = a.isolation ? ["--isolation", a.isolation] : [];
  return adminCli<{ sha256: string; otter_version: string; isolation: string }>(gatewayUrl, adminToken, [
    "autograder", "upload", a.course, a.assignment, a.autograderZip, "--timeout-seconds", String(a.timeoutSeconds ?? 600), ...isolation,
  ]);
}

export async function submitNotebook(gatewayUrl: string, token: string, notebookPath: string, path = "/api/v1/submissions") {
  const nb = JSON.parse(await readFile(notebookPath, "utf8"));
  const res = await fetch(`${gatewayUrl}${path}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ nb }) });
  if (res.status !== 202) throw new Error(`submitting ${notebookPath}: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: string; status_url: string; page_url: string };
}

/** Polls the submission's status until it is graded or failed. */
export async function waitForFinal(statusUrl: string, token: string, timeoutMs = 300_000): Promise<Record<string, any>> {
  let last: Record<string, any> = {};
  await waitFor(
    async () => {
      const res = await fetch(statusUrl, { headers: { authorization: `Bearer ${token}` } });
      last = (await res.json()) as Record<string, any>;
      return last.status === "graded" || last.status === "failed";
    },
    timeoutMs,
    () => `submission not final in time: ${JSON.stringify(last)}`,
  );
  return last;
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, describe: () => string, giveUp: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
    if (await check()) return;
    if (giveUp() || Date.now() > deadline) throw new Error(describe());
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Stops a child and everything it started (wrangler runs workerd as its own child). */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  try {
    process.kill(-child.pid!, signal);
  } catch {
    child.kill(signal);
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }, 15_000);
  const code = await exited;
  clearTimeout(timer);
  // The leader's exit does not mean its group is gone: what is left is killed, so no stray workerd
  // can hold the state directory or a core (one left by an interrupted run spun a core for a whole CI run).
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {
    // nothing was left
  }
  return code;
}
