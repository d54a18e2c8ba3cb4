import { Hono } from "hono";
import { cors } from "hono/cors";
import { authenticate } from "./auth/authenticate.js";
import { authRoutes } from "./routes/auth.js";
import type { AppEnv } from "./auth/authenticate.js";
import { ApiError, errorResponse, internalErrorResponse } from "./errors.js";
import { HUB_SERVICE_PREFIX } from "./hub-service.js";
import { ltiRoutes } from "./lti/launch.js";
import { lti13AdminRoutes } from "./lti13/admin.js";
import { lti13Routes } from "./lti13/launch.js";
import { publicJwks } from "./lti13/tool-keys.js";
import { adminRoutes } from "./routes/admin.js";
import { pageRoutes, submissionPageRoutes } from "./routes/pages.js";
import { runnerRoutes } from "./routes/runner.js";
import { staffRoutes } from "./routes/staff.js";
import { submissionRoutes } from "./routes/submissions.js";
import { sweepLostJobs } from "./dispatcher/sweeper.js";
import type { Env } from "./env.js";

export { Dispatcher } from "./dispatcher/dispatcher.js";
export { PassbackOutbox } from "./passback/outbox.js";


const app = new Hono<AppEnv>();

app.onError((err, c) => (err instanceof ApiError ? errorResponse(c, err) : internalErrorResponse(c, err)));
app.notFound((c) => errorResponse(c, new ApiError(404, "not_found", `No route for ${c.req.method} ${c.req.path}.`)));

app.get("/healthz", (c) => c.json({ ok: true }));

// The Submit button may call the gateway on its own origin from the hub's pages: only configured
// hub origins, with credentials (the session cookie).
const hubCors = cors({
  origin: (origin, c) => ((c.env as AppEnv["Bindings"]).HUB_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean).includes(origin) ? origin : null,
  credentials: true,
  allowMethods: ["GET", "POST", "OPTIONS"],
  allowHeaders: ["Content-Type", "Authorization"],
  maxAge: 600,
});
app.use("/api/v1/submissions", hubCors);
app.use("/api/v1/submissions/*", hubCors);
app.use(`${HUB_SERVICE_PREFIX}/*`, hubCors);
app.use(HUB_SERVICE_PREFIX, hubCors);

// Hub login on the gateway's own origin, and under the hub service's prefix for students who reach
// the gateway through the hub's proxy (their session cookie is then scoped to that prefix).
for (const base of ["", HUB_SERVICE_PREFIX]) {
  app.route(`${base}/auth`, authRoutes);
  app.get(`${base}/auth/whoami`, authenticate(), (c) => c.json(c.get("identity")));
}

// What the Submit buttons post today: `{"nb": ...}` to the hub service's root.
const legacy = submissionRoutes(HUB_SERVICE_PREFIX);
app.post(HUB_SERVICE_PREFIX, ...legacy.submit);
app.post(`${HUB_SERVICE_PREFIX}/`, ...legacy.submit);
app.route(HUB_SERVICE_PREFIX, legacy.app);
// The submission page also under the hub prefix, where the Submit answer's page_url points for hub posts.
app.route(HUB_SERVICE_PREFIX, submissionPageRoutes());

app.route("/", submissionRoutes("").app);
app.route("/runner/v1", runnerRoutes);
app.route("/api/v1/admin/lti13", lti13AdminRoutes);
app.route("/api/v1/admin", adminRoutes);
app.route("/api/v1/staff", staffRoutes);
app.route("/lti/1p3", lti13Routes);
app.route("/lti", ltiRoutes);
// The tool's public keys, which platforms verify its AGS client assertions with.
app.get("/.well-known/jwks.json", (c) => c.json(publicJwks(c.env), 200, { "cache-control": "public, max-age=300" }));
// HTML pages: /s/:id for students and staff, /staff/… for staff, /auth/dev-login for local stacks.
app.route("/", submissionPageRoutes());
app.route("/", pageRoutes);

export default {
  fetch: app.fetch,
  // The cron trigger (wrangler.toml): finds submissions D1 says are waiting that no Dispatcher holds.
  scheduled: async (_controller, env, ctx) => {
    ctx.waitUntil(sweepLostJobs(env));
  },
} satisfies ExportedHandler<Env>;
