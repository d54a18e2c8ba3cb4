import type { D1Migration } from "cloudflare:test";
import type { Env as GatewayEnv } from "../src/env.js";

// Types `env` from cloudflare:test / cloudflare:workers as the gateway's bindings plus the test-only ones.
declare global {
  namespace Cloudflare {
    interface Env extends GatewayEnv {
      TEST_MIGRATIONS: D1Migration[];
    }
  }
}

