#!/usr/bin/env -S node --import tsx
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Docker from "dockerode";
import { Agent } from "./agent.js";
import { Artifacts } from "./artifacts.js";
import { ConfigError, HELP, type RunnerConfig, loadConfig } from "./config.js";
import { GatewayConnection } from "./connection.js";
import { DockerSandbox } from "./grading/docker-sandbox.js";
import { LocalVenvSandbox } from "./grading/local-venv-sandbox.js";
import type { Sandbox } from "./grading/sandbox.js";
import { log } from "./log.js";
import { RunnerMetrics } from "./metrics.js";

class StartupError extends Error {}

async function sandboxFor(config: RunnerConfig): Promise<Sandbox> {
  if (config.unsandboxed) {
    log.warn("UNSANDBOXED MODE: student code runs as this user with network access. Use for local development only, never for real students.");
    const sandbox = new LocalVenvSandbox(config.otterBin);
    const versions = await sandbox.otterVersions().catch((err) => {
      throw new StartupError(`--unsandboxed: ${(err as Error).message}`);
    });
    if (versions.length === 0) throw new StartupError(`--unsandboxed: could not read the otter-grader version of ${config.otterBin}`);
    return sandbox;
  }
  const docker = new Docker();
  try {
    await docker.ping();
  } catch (err) {
    throw new StartupError(
      `cannot reach the Docker engine (${process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock"}): ${(err as Error).message}. Start dockerd, or for development without Docker pass --unsandboxed.`,
    );
  }
  const sandbox = new DockerSandbox(
    docker,
    { memoryBytes: config.memoryBytes, nanoCpus: Math.round(config.cpus * 1e9), pidsLimit: config.pidsLimit, tmpfsBytes: config.tmpfsBytes, runtime: config.runtime },
    {
      runnerName: config.name,
      killGraceMs: config.killGraceMs,
      log,
      sandboxContract: config.imageContract,
      warmPool: config.warmPool > 0 ? { size: config.warmPool, maxAgeMs: config.warmMaxAgeMs } : undefined,
      environments: {
        caBundle: config.buildCaBundle,
        budgetBytes: config.environmentBudgetBytes,
        logDir: join(config.cacheDir, "environment-logs"),
        registry: config.environmentRegistry,
        registryAuth: config.environmentRegistryAuthFile ? JSON.parse(readFileSync(config.environmentRegistryAuthFile, "utf8")) : undefined,
      },
    },
  );
  const images = await sandbox.images();
  if (images.size === 0) {
    throw new StartupError(
      `no grading image on this Docker engine (none carries the labels org.otter-edge.otter-version and org.otter-edge.sandbox=${config.imageContract}); build one with grading-image/build.sh`,
    );
  }
  log.info({ images: Object.fromEntries(images) }, "grading images");
  // Nothing is graded yet: every container under this runner's name was left by an earlier process
  // (killed before it could remove it). Reaped before the first lease.
  await sandbox.reapOrphans().then(
    ({ removed, failed }) => (removed.length > 0 || failed.length > 0 ? log.info({ removed: removed.length, failed: failed.length }, "orphan grading containers reaped") : undefined),
    (err) => log.warn({ err: String(err) }, "could not list orphan grading containers"),
  );
  return sandbox;
}

async function checkGateway(url: string): Promise<void> {
  try {
    const res = await fetch(new URL("/healthz", url), { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    throw new StartupError(`cannot reach the gateway at ${url}: ${(err as Error).message}`);
  }
}

async function main(): Promise<number> {
  let config: RunnerConfig | "help";
  try {
    config = loadConfig(process.argv.slice(2), process.env, (p) => readFileSync(p, "utf8"));
  } catch (err) {
    if (err instanceof ConfigError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`otter-edge-runner: ${(err as Error).message}\nRun with --help for the options.\n`);
      return 2;
    }
    throw err;
  }
  if (config === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  let sandbox: Sandbox;
  try {
    sandbox = await sandboxFor(config);
    await checkGateway(config.gatewayUrl);
  } catch (err) {
    if (err instanceof StartupError) {
      log.fatal(err.message);
      process.stderr.write(`otter-edge-runner: ${err.message}\n`);
      return 3;
    }
    throw err;
  }
  const metrics = new RunnerMetrics();
  if (config.metricsPort > 0) {
    try {
      await metrics.listen(config.metricsPort);
    } catch (err) {
      process.stderr.write(`otter-edge-runner: cannot serve metrics on port ${config.metricsPort}: ${(err as Error).message}\n`);
      return 3;
    }
    log.info({ port: config.metricsPort }, "serving /metrics, /healthz, /readyz");
  }
  // Only once nothing can stop the start any more (a runner exiting before this would leave its warm
  // containers to the next start's reaping), and after the reaping: ready before the first lease.
  if (sandbox instanceof DockerSandbox) sandbox.fillPool();
  const agent = new Agent({
    name: config.name,
    capacity: config.capacity,
    connect: (shard) => new GatewayConnection({ gatewayUrl: config.gatewayUrl, token: config.token, shard, log }),
    sandbox,
    artifacts: new Artifacts(config.gatewayUrl, config.token, config.cacheDir),
    log,
    metrics,
  });
  await agent.start();

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping: finishing or handing back held jobs");
      agent
        .drain(config.drainMs)
        // Warm containers are removed, and removals of finished jobs' containers awaited, before exiting.
        .then(() => sandbox.close?.())
        .then(
        () => resolve(0),
        (err) => {
          log.error({ err: String(err) }, "drain failed");
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log.fatal({ err: String(err), stack: (err as Error).stack }, "runner crashed");
    process.exit(1);
  },
);
