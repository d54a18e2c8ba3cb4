import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, waitFor } from "../../scripts/local-stack.js";

/** A real image registry (Debian's docker-registry) on loopback, as a fleet's would be; the engine allows loopback registries over plain HTTP. */
export interface Registry {
  /** A repository in it, for environment images: 127.0.0.1:PORT/otter-edge. */
  repository: string;
  stop(): void;
}

export async function startRegistry(): Promise<Registry> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "otter-edge-registry-"));
  writeFileSync(join(dir, "config.yml"), `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  const stop = () => {
    // SIGKILL: on SIGTERM the registry waits for the engine's idle keep-alive connections to close.
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(() => fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false), 30_000, () => "docker-registry did not start");
  } catch (err) {
    stop();
    throw err;
  }
  return { repository: `127.0.0.1:${port}/otter-edge`, stop };
}
