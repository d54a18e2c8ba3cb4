import { defineProject } from "vitest/config";

// Node-side tests: real processes (wrangler dev, the runner), the real Docker engine, real otter-grader.
export default defineProject({
  test: {
    name: "node",
    include: ["**/*.test.ts"],
    testTimeout: 600_000,
    hookTimeout: 180_000,
    // These tests share one Docker engine and two cores; running files in parallel only adds noise.
    fileParallelism: false,
  },
});
