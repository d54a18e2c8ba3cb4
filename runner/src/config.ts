import { availableParallelism, hostname } from "node:os";
import { parseArgs } from "node:util";
import { z } from "zod";

export const HELP = `otter-edge-runner: grades otter-grader notebooks for an otter-edge gateway.

Usage: otter-edge-runner [options]

Every option can also be set by the environment variable shown.

  --gateway URL          Gateway base URL                        OTTER_EDGE_GATEWAY_URL
  --token TOKEN          Runner token (prefer the env or a file)  OTTER_EDGE_RUNNER_TOKEN
  --token-file PATH      File holding the runner token            OTTER_EDGE_RUNNER_TOKEN_FILE
  --name NAME            Runner name in logs and on its grading   OTTER_EDGE_RUNNER_NAME
                         containers (default: hostname); unique
                         per Docker engine: on start the runner
                         removes containers left under its name
  --capacity N           Jobs graded at once (default: cores)     OTTER_EDGE_CAPACITY
  --memory BYTES         Memory cap per grading container          OTTER_EDGE_MEMORY_BYTES (default 2147483648)
  --cpus N               CPUs per grading container               OTTER_EDGE_CPUS (default 1)
  --pids N               Process cap per grading container        OTTER_EDGE_PIDS_LIMIT (default 512)
  --tmpfs BYTES          Size of the container's /tmp             OTTER_EDGE_TMPFS_BYTES (default 268435456)
  --runtime NAME         OCI runtime for grading, e.g. runsc      OTTER_EDGE_RUNTIME
  --cache-dir PATH       Where autograder.zip files are cached    OTTER_EDGE_CACHE_DIR (default /var/cache/otter-edge)
  --drain-ms N           On SIGTERM, how long running jobs may    OTTER_EDGE_DRAIN_MS (default 600000)
                         finish before they are handed back
  --kill-grace-ms N      How long a killed grading container may  OTTER_EDGE_KILL_GRACE_MS (default 30000)
                         take to exit before the job is reported
                         as an infrastructure error and the
                         container is left for an operator
  --warm-pool N          Grading containers started ahead of time OTTER_EDGE_WARM_POOL (default 0 = off)
                         per otter version, each waiting with
                         otter imported for ONE job, then removed
                         (never reused); capacity + 1 keeps one
                         ready for every free slot. Only images
                         labelled org.otter-edge.warm-start=wait-for-1
  --warm-max-age-ms N    A warm container unused this long is     OTTER_EDGE_WARM_MAX_AGE_MS (default 600000)
                         replaced (new images, engine settings)
  --image-contract V     org.otter-edge.sandbox value a grading   OTTER_EDGE_IMAGE_CONTRACT (default uid-split-1)
                         image must carry: only to keep a runner
                         on a test build of the image
  --unsandboxed          Grade with a local otter, NO SANDBOX:    OTTER_EDGE_UNSANDBOXED=1
                         for development without Docker only
  --otter-bin PATH       otter executable for --unsandboxed       OTTER_EDGE_OTTER_BIN (default otter)
  --metrics-port N       Prometheus /metrics, /healthz, /readyz  OTTER_EDGE_METRICS_PORT (default 9464; 0 = off)
  --build-ca-bundle PEM  CA bundle pip trusts when building assignment environments (a TLS-inspecting
                         proxy to the package index)       OTTER_EDGE_BUILD_CA_BUNDLE
  --environment-budget B disk assignment environment images may add (bytes; least recently used removed)
                                                           OTTER_EDGE_ENVIRONMENT_BUDGET_BYTES (default 20 GiB)
  --environment-registry R  registry repository shared by the fleet (host:port/path): environment
                         images are pulled from it first and pushed to it once built
                                                           OTTER_EDGE_ENVIRONMENT_REGISTRY
  --environment-registry-auth FILE  JSON {username, password, serveraddress} for that registry
                                                           OTTER_EDGE_ENVIRONMENT_REGISTRY_AUTH_FILE
  --help                 Show this help

The Docker engine is reached through DOCKER_HOST (default unix:///var/run/docker.sock).
Grading images are found by their labels org.otter-edge.otter-version and
org.otter-edge.sandbox=uid-split-1 (the notebook runs as a second uid; grading-image/Dockerfile).
`;

const RunnerConfig = z.object({
  gatewayUrl: z.url({ message: "--gateway / OTTER_EDGE_GATEWAY_URL must be the gateway's http(s) URL" }),
  token: z.string().min(1, "a runner token is required: set OTTER_EDGE_RUNNER_TOKEN or --token-file"),
  name: z.string().min(1).max(100),
  capacity: z.coerce.number().int().min(1).max(256),
  memoryBytes: z.coerce.number().int().min(64 * 1024 * 1024),
  cpus: z.coerce.number().positive().max(64),
  pidsLimit: z.coerce.number().int().min(16),
  tmpfsBytes: z.coerce.number().int().min(1024 * 1024),
  runtime: z.string().min(1).optional(),
  cacheDir: z.string().min(1),
  drainMs: z.coerce.number().int().min(0),
  killGraceMs: z.coerce.number().int().min(0),
  warmPool: z.coerce.number().int().min(0).max(256),
  warmMaxAgeMs: z.coerce.number().int().min(1000),
  imageContract: z.string().min(1),
  unsandboxed: z.boolean(),
  otterBin: z.string().min(1),
  metricsPort: z.coerce.number().int().min(0).max(65535),
  /** PEM bundle pip trusts while building an assignment environment (a TLS-inspecting proxy on the node's way to the package index). */
  buildCaBundle: z.string().min(1).optional(),
  /** Disk that assignment environment images may add on top of the grading images; least recently used removed beyond it. */
  environmentBudgetBytes: z.coerce.number().int().min(0),
  /** Registry repository the fleet shares environment images through (pull first, push what was built). */
  environmentRegistry: z.string().min(1).optional(),
  /** JSON file with that registry's credentials ({username, password, serveraddress}). */
  environmentRegistryAuthFile: z.string().min(1).optional(),
});
export type RunnerConfig = z.infer<typeof RunnerConfig>;

export class ConfigError extends Error {}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv, readFile: (path: string) => string): RunnerConfig | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      gateway: { type: "string" },
      token: { type: "string" },
      "token-file": { type: "string" },
      name: { type: "string" },
      capacity: { type: "string" },
      memory: { type: "string" },
      cpus: { type: "string" },
      pids: { type: "string" },
      tmpfs: { type: "string" },
      runtime: { type: "string" },
      "cache-dir": { type: "string" },
      "drain-ms": { type: "string" },
      "kill-grace-ms": { type: "string" },
      "warm-pool": { type: "string" },
      "warm-max-age-ms": { type: "string" },
      "image-contract": { type: "string" },
      unsandboxed: { type: "boolean" },
      "otter-bin": { type: "string" },
      "metrics-port": { type: "string" },
      "build-ca-bundle": { type: "string" },
      "environment-budget": { type: "string" },
      "environment-registry": { type: "string" },
      "environment-registry-auth": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return "help";
  const tokenFile = values["token-file"] ?? env.OTTER_EDGE_RUNNER_TOKEN_FILE;
  let token = values.token ?? env.OTTER_EDGE_RUNNER_TOKEN ?? "";
  if (!token && tokenFile) {
    try {
      token = readFile(tokenFile).trim();
    } catch (err) {
      throw new ConfigError(`cannot read the runner token file ${tokenFile}: ${(err as Error).message}`);
    }
  }
  const parsed = RunnerConfig.safeParse({
    gatewayUrl: values.gateway ?? env.OTTER_EDGE_GATEWAY_URL,
    token,
    name: values.name ?? env.OTTER_EDGE_RUNNER_NAME ?? hostname(),
    capacity: values.capacity ?? env.OTTER_EDGE_CAPACITY ?? availableParallelism(),
    memoryBytes: values.memory ?? env.OTTER_EDGE_MEMORY_BYTES ?? 2 * 1024 ** 3,
    cpus: values.cpus ?? env.OTTER_EDGE_CPUS ?? 1,
    pidsLimit: values.pids ?? env.OTTER_EDGE_PIDS_LIMIT ?? 512,
    tmpfsBytes: values.tmpfs ?? env.OTTER_EDGE_TMPFS_BYTES ?? 256 * 1024 * 1024,
    runtime: values.runtime ?? env.OTTER_EDGE_RUNTIME,
    cacheDir: values["cache-dir"] ?? env.OTTER_EDGE_CACHE_DIR ?? "/var/cache/otter-edge",
    drainMs: values["drain-ms"] ?? env.OTTER_EDGE_DRAIN_MS ?? 600_000,
    killGraceMs: values["kill-grace-ms"] ?? env.OTTER_EDGE_KILL_GRACE_MS ?? 30_000,
    warmPool: values["warm-pool"] ?? env.OTTER_EDGE_WARM_POOL ?? 0,
    warmMaxAgeMs: values["warm-max-age-ms"] ?? env.OTTER_EDGE_WARM_MAX_AGE_MS ?? 600_000,
    imageContract: values["image-contract"] ?? env.OTTER_EDGE_IMAGE_CONTRACT ?? "uid-split-1",
    unsandboxed: values.unsandboxed ?? env.OTTER_EDGE_UNSANDBOXED === "1",
    otterBin: values["otter-bin"] ?? env.OTTER_EDGE_OTTER_BIN ?? "otter",
    metricsPort: values["metrics-port"] ?? env.OTTER_EDGE_METRICS_PORT ?? 9464,
    buildCaBundle: values["build-ca-bundle"] ?? env.OTTER_EDGE_BUILD_CA_BUNDLE,
    environmentBudgetBytes: values["environment-budget"] ?? env.OTTER_EDGE_ENVIRONMENT_BUDGET_BYTES ?? 20 * 1024 ** 3,
    environmentRegistry: values["environment-registry"] ?? env.OTTER_EDGE_ENVIRONMENT_REGISTRY,
    environmentRegistryAuthFile: values["environment-registry-auth"] ?? env.OTTER_EDGE_ENVIRONMENT_REGISTRY_AUTH_FILE,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`${issue.path.join(".")}: ${issue.message}`);
  }
  return parsed.data;
}
