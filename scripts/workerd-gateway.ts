/**
 * The gateway on local workerd through Miniflare alone, without `wrangler dev`'s proxy in front.
 *
 * `wrangler dev` puts a proxy Worker before the gateway and logs every request through a loopback
 * call into its node process; on a 2-core machine that costs as much CPU as the gateway itself
 * (bench/README.md). Deployed Workers have neither, so the intake benchmark measures the gateway
 * here too. The Worker is the one `wrangler deploy` would upload (bundled by `wrangler deploy
 * --dry-run`), with the bindings wrangler.toml declares and the same state layout as
 * `wrangler dev --persist-to`, so `wrangler d1 execute --local --persist-to` reads the same D1.
 *
 *   tsx scripts/workerd-gateway.ts --root DIR --state DIR --port N --env-file FILE [--inspector-port N]
 *
 * Prints `ready <url>` once it serves. Used by scripts/local-stack.ts (`startGateway({ host: "workerd" })`).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs, parseEnv } from "node:util";
import { Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const { values: args } = parseArgs({ options: { root: { type: "string" }, state: { type: "string" }, port: { type: "string" }, "env-file": { type: "string" }, "inspector-port": { type: "string" } } });
const root = args.root!;
const state = args.state!;

const bundleDir = join(state, "bundle");
execFileSync(join(root, "node_modules", ".bin", "wrangler"), ["deploy", "--dry-run", "--outdir", bundleDir], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });

const { workerOptions } = unstable_getMiniflareWorkerOptions(join(root, "wrangler.toml"));
const mf = new Miniflare({
  ...workerOptions,
  name: "otter-edge",
  modules: true,
  scriptPath: join(bundleDir, "index.js"),
  modulesRoot: bundleDir,
  bindings: { ...workerOptions.bindings, ...(parseEnv(readFileSync(args["env-file"]!, "utf8")) as Record<string, string>) },
  host: "127.0.0.1",
  port: Number(args.port),
  defaultPersistRoot: join(state, "v3"),
  // Deployed Workers have no per-request log line; the Worker's own console output still shows.
  logRequests: false,
  // For bench/cpu-profile.ts: V8's profiler over the Chrome DevTools protocol.
  ...(args["inspector-port"] ? { inspectorPort: Number(args["inspector-port"]) } : {}),
  log: new Log(LogLevel.WARN),
});
const url = await mf.ready;
console.log(`ready ${url.origin}`);

const stop = () => void mf.dispose().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
