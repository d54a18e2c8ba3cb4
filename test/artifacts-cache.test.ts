import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Artifacts, sha256Hex } from "../runner/src/artifacts.js";

/**
 * The runner's autograder cache on a real disk, fed by a real HTTP server on loopback: parallel
 * fetches (one runner's jobs, and several runners sharing a cache directory) must each get the
 * exact bytes, leave one complete file and no temporaries, and never cache bytes that fail the hash.
 */
const TOKEN = "oe_runner_cache-test";
const blob = randomBytes(4 * 1024 * 1024);
const sha = sha256Hex(blob);

let server: Server;
let gatewayUrl: string;
/** What the stand-in gateway serves, counts, and (with a barrier) holds back. */
const gateway = {
  body: blob as Buffer,
  status: 200,
  requests: 0,
  unauthorized: 0,
  /** When set, answers are held until this many requests are waiting: the downloads overlap for sure. */
  barrier: 0,
  held: [] as Array<() => void>,
};

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) gateway.unauthorized += 1;
    gateway.requests += 1;
    const answer = () => {
      if (req.url !== `/runner/v1/autograders/${sha}` || gateway.status !== 200) return res.writeHead(gateway.status === 200 ? 404 : gateway.status).end();
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(gateway.body);
    };
    if (gateway.barrier === 0) return answer();
    gateway.held.push(answer);
    if (gateway.held.length === gateway.barrier) for (const go of gateway.held.splice(0)) go();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  gatewayUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => server.close());

let cacheDir: string;
beforeEach(() => {
  Object.assign(gateway, { body: blob, status: 200, requests: 0, unauthorized: 0, barrier: 0, held: [] });
  cacheDir = mkdtempSync(join(tmpdir(), "otter-edge-cache-"));
  return () => rmSync(cacheDir, { recursive: true, force: true });
});

const cached = () => readdirSync(join(cacheDir, "autograders")).sort();

describe("autograder disk cache", () => {
  it("downloads once for many parallel jobs of one runner", async () => {
    const artifacts = new Artifacts(gatewayUrl, TOKEN, cacheDir);
    const got = await Promise.all(Array.from({ length: 20 }, () => artifacts.autograder(sha)));
    expect(gateway.requests).toBe(1);
    for (const bytes of got) expect(bytes.equals(blob)).toBe(true);
    expect(cached()).toEqual([`${sha}.zip`]);
    expect(gateway.unauthorized).toBe(0);
  });

  it("leaves one complete file and no temporaries when several runners fetch the same autograder at once", async () => {
    const runners = 8;
    gateway.barrier = runners; // every runner's download is in flight before any is answered
    const got = await Promise.all(Array.from({ length: runners }, () => new Artifacts(gatewayUrl, TOKEN, cacheDir).autograder(sha)));
    expect(gateway.requests).toBe(runners);
    for (const bytes of got) expect(bytes.equals(blob)).toBe(true);
    expect(cached()).toEqual([`${sha}.zip`]);
    expect(sha256Hex(readFileSync(join(cacheDir, "autograders", `${sha}.zip`)))).toBe(sha);

    // A runner started later reads it from the disk.
    gateway.barrier = 0;
    const later = await new Artifacts(gatewayUrl, TOKEN, cacheDir).autograder(sha);
    expect(later.equals(blob)).toBe(true);
    expect(gateway.requests).toBe(runners);
  });

  it("replaces a damaged cache file instead of grading with it", async () => {
    mkdirSync(join(cacheDir, "autograders"), { recursive: true });
    writeFileSync(join(cacheDir, "autograders", `${sha}.zip`), blob.subarray(0, 1000)); // a torn write from an older runner
    const got = await new Artifacts(gatewayUrl, TOKEN, cacheDir).autograder(sha);
    expect(got.equals(blob)).toBe(true);
    expect(gateway.requests).toBe(1);
    expect(sha256Hex(readFileSync(join(cacheDir, "autograders", `${sha}.zip`)))).toBe(sha);
  });

  it("refuses bytes that do not match the hash, caches nothing, and calls it an infrastructure failure", async () => {
    const tampered = Buffer.from(blob);
    tampered[12345] = tampered[12345]! ^ 0xff;
    gateway.body = tampered;
    const artifacts = new Artifacts(gatewayUrl, TOKEN, cacheDir);
    const results = await Promise.allSettled([artifacts.autograder(sha), new Artifacts(gatewayUrl, TOKEN, cacheDir).autograder(sha)]);
    for (const r of results) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason).toMatchObject({ name: "InfrastructureError", message: expect.stringMatching(/does not match its hash/) });
    }
    expect(readdirSync(cacheDir)).toEqual([]);

    // The next attempt (a retried job) downloads again: a failure is not remembered.
    gateway.body = blob;
    expect((await artifacts.autograder(sha)).equals(blob)).toBe(true);
  });

  it("reports a gateway error as an infrastructure failure", async () => {
    gateway.status = 503;
    await expect(new Artifacts(gatewayUrl, TOKEN, cacheDir).autograder(sha)).rejects.toMatchObject({ name: "InfrastructureError", message: expect.stringMatching(/HTTP 503/) });
    expect(readdirSync(cacheDir)).toEqual([]);
  });
});
