import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineProject } from "vitest/config";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

/**
 * The package index this machine's pip installs from (its configured index-url, else pip's
 * default): uploads are checked against the same real index the runners' builds use.
 */
function pipIndexUrl(): string {
  const python = process.env.PYTHON ?? "python3";
  try {
    const configured = execFileSync(python, ["-m", "pip", "config", "get", "global.index-url"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    if (configured) return configured;
  } catch {
    // not configured: pip's own default
  }
  return execFileSync(python, ["-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"], { encoding: "utf8" }).trim();
}

export default defineProject({
  plugins: [
    cloudflareTest(async () => ({
      wrangler: { configPath: here("../wrangler.toml") },
      miniflare: {
        bindings: {
          TEST_MIGRATIONS: await readD1Migrations(here("./migrations")),
          DEV_USER_TOKENS: "alice:alice-token,bob:bob-token",
          ADMIN_TOKEN: "admin-token",
          // Signs the HTML pages' cookies (staff sign-in, development student sign-in).
          SESSION_SECRET: "test-session-secret",
          MAX_SUBMISSION_BYTES: "200000",
          // Tests submit far faster than a student; rate-limit tests turn the limits back on.
          SUBMIT_RATE_LIMITS: "off",
          PACKAGE_INDEX_URL: process.env.PIP_INDEX_URL ?? pipIndexUrl(),
        },
      },
    })),
  ],
  test: {
    name: "gateway",
    include: ["test/**/*.test.ts"],
    setupFiles: ["./test/apply-migrations.ts"],
    // These tests wait on messages, never on time; the limit only guards against a hang, and must
    // survive the Node-side suite (fork bombs, a stopped Docker engine) loading the same 2 cores.
    testTimeout: 30_000,
  },
});
