import { defineProject } from "vitest/config";

// The runner agent's protocol, in process (loopback WebSockets, a scripted gateway): seconds, no
// Docker, no workerd. `npx vitest run --project runner`.
export default defineProject({
  test: {
    name: "runner",
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
  },
});
