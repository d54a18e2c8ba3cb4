import { describe, expect, it } from "vitest";
import { loadConfig } from "../runner/src/config.js";
import { startRunner } from "../scripts/local-stack.js";

/** The runner's own command line: clear errors, and no unsandboxed grading unless asked for. */
describe("runner start-up", () => {
  async function exitOf(env: Record<string, string>, args: string[] = []) {
    const runner = startRunner({ gatewayUrl: "http://127.0.0.1:9", token: "t", cacheDir: "/tmp/otter-edge-startup-test", env, args });
    const code = await new Promise<number | null>((resolve) => runner.process.once("exit", resolve));
    return { code, output: runner.output() };
  }

  it("explains a missing token", async () => {
    const { code, output } = await exitOf({ OTTER_EDGE_RUNNER_TOKEN: "" });
    expect(code).toBe(2);
    expect(output).toMatch(/runner token is required/);
  });

  it("refuses to grade without a Docker engine unless --unsandboxed is given", async () => {
    const { code, output } = await exitOf({ DOCKER_HOST: "unix:///nonexistent/docker.sock" });
    expect(code).toBe(3);
    expect(output).toMatch(/cannot reach the Docker engine/);
    expect(output).toMatch(/--unsandboxed/);
  });

  it("explains an unreachable gateway", async () => {
    const { code, output } = await exitOf({});
    expect(code).toBe(3);
    expect(output).toMatch(/cannot reach the gateway at http:\/\/127\.0\.0\.1:9/);
  });

  it("prints every option with --help", async () => {
    const { code, output } = await exitOf({}, ["--help"]);
    expect(code).toBe(0);
    for (const option of ["--gateway", "--token-file", "--capacity", "--memory", "--unsandboxed", "--drain-ms", "--warm-pool", "--warm-max-age-ms"]) expect(output).toContain(option);
  });

  it("keeps the warm pool off unless asked for, by option or environment", () => {
    const env = { OTTER_EDGE_GATEWAY_URL: "http://127.0.0.1:9", OTTER_EDGE_RUNNER_TOKEN: "t" };
    const read = () => "";
    const config = (argv: string[], extra: Record<string, string> = {}) => {
      const c = loadConfig(argv, { ...env, ...extra }, read);
      if (c === "help") throw new Error("help");
      return c;
    };
    expect(config([])).toMatchObject({ warmPool: 0, warmMaxAgeMs: 600_000, imageContract: "uid-split-1" });
    expect(config([], { OTTER_EDGE_WARM_POOL: "3", OTTER_EDGE_WARM_MAX_AGE_MS: "60000" })).toMatchObject({ warmPool: 3, warmMaxAgeMs: 60_000 });
    expect(config(["--warm-pool", "2"], { OTTER_EDGE_WARM_POOL: "3" }).warmPool).toBe(2);
    expect(() => config([], { OTTER_EDGE_WARM_POOL: "-1" })).toThrow(/warmPool/);
  });
});
