import { describe, expect, it } from "vitest";
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
    for (const option of ["--gateway", "--token-file", "--capacity", "--memory", "--unsandboxed", "--drain-ms"]) expect(output).toContain(option);
  });
});
