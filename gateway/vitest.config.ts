import { fileURLToPath } from "node:url";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineProject } from "vitest/config";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

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
