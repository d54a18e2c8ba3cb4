import { createHash, randomUUID } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InfrastructureError } from "./grading/errors.js";

/**
 * Downloads the blobs a job needs from the gateway and checks them against their SHA-256.
 * Autograders are cached on disk by hash (written to a temporary name, then renamed, so concurrent
 * jobs never read half a file); notebooks are used once and kept in memory only.
 */
export class Artifacts {
  private readonly inFlight = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly gatewayUrl: string,
    private readonly token: string,
    private readonly cacheDir: string,
  ) {}

  notebook(sha256: string): Promise<Buffer> {
    return this.download("notebooks", sha256);
  }

  autograder(sha256: string): Promise<Buffer> {
    const key = `autograders/${sha256}`;
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.cachedAutograder(sha256).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  private async cachedAutograder(sha256: string): Promise<Buffer> {
    const dir = join(this.cacheDir, "autograders");
    const path = join(dir, `${sha256}.zip`);
    const cached = await readFile(path).catch(() => null);
    if (cached && sha256Hex(cached) === sha256) return cached;
    const bytes = await this.download("autograders", sha256);
    await mkdir(dir, { recursive: true });
    const temporary = `${path}.${randomUUID()}.tmp`;
    await writeFile(temporary, bytes);
    await rename(temporary, path);
    return bytes;
  }

  private async download(kind: "notebooks" | "autograders", sha256: string): Promise<Buffer> {
    let res: Response;
    try {
      res = await fetch(new URL(`/runner/v1/${kind}/${sha256}`, this.gatewayUrl), {
        headers: { authorization: `Bearer ${this.token}` },
        signal: AbortSignal.timeout(60_000),
      });
    } catch (err) {
      throw new InfrastructureError(`downloading ${kind}/${sha256}: ${(err as Error).message}`);
    }
    if (!res.ok) throw new InfrastructureError(`downloading ${kind}/${sha256}: HTTP ${res.status}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (sha256Hex(bytes) !== sha256) throw new InfrastructureError(`downloaded ${kind}/${sha256} does not match its hash`);
    return bytes;
  }
}

export function sha256Hex(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}
