/**
 * `npm start`: the whole of otter-edge on this machine. The gateway runs under `wrangler dev` (local
 * workerd; D1, R2 and the Dispatcher's state under .otter-edge/state), one runner grades in Docker,
 * the sample assignment is configured, and the sample notebook is graded once to show it works.
 * Then it keeps running and prints how to submit with curl. Ctrl-C stops everything.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LmsStandin } from "../test/support/lms.js";
import { ROOT, adminCli, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitFor, waitForFinal } from "./local-stack.js";

const PORT = Number(process.env.PORT ?? 8787);
const work = join(ROOT, ".otter-edge");
const sample = join(ROOT, "assignments", "sample");

const credentials = newCredentials(["alice", "bob"]);
// Grades are posted over LTI 1.1 to the LMS stand-in (test/lti/lms_standin.py), which plays edX and
// checks every signature with oauthlib.
const lms = await LmsStandin.start();
console.log(`LMS stand-in (edX outcome service) on ${lms.url}`);
console.log(`starting the gateway on http://127.0.0.1:${PORT} (wrangler dev, local state in .otter-edge/state)`);
const gateway = await startGateway({
  stateDir: join(work, "state"),
  credentials,
  port: PORT,
  vars: {
    LTI_CONSUMERS: `${lms.key}:${lms.secret}`,
    EDX_URL: lms.url,
    SUBMIT_RATE_LIMITS: "on",
    // Signs the pages' cookies; with DEV_USER_TOKENS it also turns on /auth/dev-login for the students above.
    SESSION_SECRET: randomBytes(24).toString("base64url"),
  },
});
const uploaded = await configureAssignment(gateway.url, credentials.admin, {
  configFile: join(sample, "course-config.json"),
  course: "demo101",
  assignment: "sample",
  autograderZip: join(sample, "dist", "autograder.zip"),
});
console.log(`course demo101 configured; sample autograder ${uploaded.sha256.slice(0, 12)}… (otter-grader ${uploaded.otter_version})`);
const runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), output: "inherit" });

const stop = async () => {
  console.log("\nstopping…");
  await runner.stop();
  await gateway.stop();
  await lms.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

const alice = credentials.students.alice!;
const notebook = join(sample, "submissions", "full.ipynb");
console.log("grading the sample notebook once…");
const { status_url, page_url } = await submitNotebook(gateway.url, alice, notebook, "/services/otter_grade/");
const result = await waitForFinal(status_url, alice);
console.log(`\nsample graded: status=${result.status} verdict=${result.verdict} score=${result.score} (${result.points}/${result.max_points})`);
let passback: Record<string, any> = {};
await waitFor(
  async () => {
    passback = (await (await fetch(status_url, { headers: { authorization: `Bearer ${alice}` } })).json()) as Record<string, any>;
    return !["pending", "retrying"].includes(passback.passback?.state);
  },
  60_000,
  () => "the grade was not posted to the LMS stand-in in time",
);
const posted = (await lms.grades()).at(-1);
console.log(`grade passback: ${passback.passback?.state}; the LMS stand-in received score ${posted?.textString} for ${posted?.sourcedId}`);

const staff = await adminCli<{ token: string }>(gateway.url, credentials.admin, ["tokens", "create", "staff", "ta-local", "--course", "demo101"]);
const tokensFile = join(work, "tokens.json");
await writeFile(tokensFile, JSON.stringify({ ...credentials, staff: staff.token }, null, 2), { mode: 0o600 });
console.log(`
otter-edge is running. Tokens for this run are in .otter-edge/tokens.json. Submit as alice:

  curl -s -X POST ${gateway.url}/services/otter_grade/ \\
    -H 'Content-Type: application/json' -H 'Authorization: token ${alice}' \\
    --data "{\\"nb\\": $(cat assignments/sample/submissions/partial.ipynb)}"

then read the result (the status_url from the answer):

  curl -s -H 'Authorization: token ${alice}' ${gateway.url}/api/v1/submissions/<id>

In a browser: sign in as alice at ${gateway.url}/auth/dev-login (token ${alice}), then open the
sample's page ${page_url}. Staff: ${gateway.url}/staff/login with the staff token ${staff.token}.

Ctrl-C stops the gateway and the runner.`);
