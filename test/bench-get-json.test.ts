import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { getJson } from "../bench/lib.js";

/**
 * The benchmarks' polling GET (bench/lib.ts getJson) against a server that behaves like wrangler
 * 4.86's dev proxy after workerd dropped a request: the request is parked, unanswered, until
 * another request arrives.
 */
let server: http.Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/** Parks the first `park` requests; answers every later one with its sequence number. */
async function parkingServer(park: number, status = 200): Promise<{ url: string; received: () => number }> {
  let received = 0;
  server = http.createServer((req, res) => {
    received += 1;
    if (received <= park) return; // parked: never answered
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ request: received }));
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/stats`, received: () => received };
}

describe("bench getJson", () => {
  it("sends a parked GET again instead of waiting for it", { timeout: 10_000 }, async () => {
    const { url } = await parkingServer(1);
    const retries: number[] = [];
    const body = await getJson<{ request: number }>(url, {}, { timeoutMs: 200, onRetry: (attempt) => retries.push(attempt) });
    expect(body).toEqual({ request: 2 });
    expect(retries).toEqual([1]);
  });

  it("gives up after its attempts", { timeout: 10_000 }, async () => {
    const { url, received } = await parkingServer(Number.POSITIVE_INFINITY);
    await expect(getJson(url, {}, { timeoutMs: 100, attempts: 3 })).rejects.toThrow(/abort|timeout/i);
    expect(received()).toBe(3);
  });

  it("does not repeat a request the server answered with an error", { timeout: 10_000 }, async () => {
    const { url, received } = await parkingServer(0, 500);
    await expect(getJson(url, {}, { timeoutMs: 1_000 })).rejects.toThrow(/500/);
    expect(received()).toBe(1);
  });
});
