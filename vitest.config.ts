import { defineConfig } from "vitest/config";

// Three projects: the gateway's tests inside workerd (Workers pool), the runner agent's protocol in
// process (seconds), and the Node-side tests
// (runner, end to end with wrangler dev + Docker).
export default defineConfig({
  test: {
    projects: ["gateway/vitest.config.ts", "runner/vitest.config.ts", "test/vitest.config.ts"],
    // Logs of passing tests are noise; a failing test shows its own.
    silent: "passed-only",
  },
});
