/**
 * `npm run otter-edge -- <command>`: administration of a gateway, local or deployed.
 * Reads the gateway URL and admin token from --gateway/--admin-token or OTTER_EDGE_URL/OTTER_EDGE_ADMIN_TOKEN.
 */
import { parseArgs } from "node:util";
import { AdminClient, type RegradeProgress } from "./admin-client.js";
import { buildAutograderEnvironment } from "./autograder-build.js";
import { exportGrades } from "./grades-export.js";
import { canvasDeveloperKey, rotatedToolKeys } from "./lti13.js";

const HELP = `otter-edge: administer an otter-edge gateway

  otter-edge config load FILE                                 load the course config (JSON)
  otter-edge autograder upload COURSE ASSIGNMENT ZIP [--timeout-seconds N] [--isolation kernel|grader]
      isolation: where the tests run; kernel (new assignments) grades exactly as \`otter run\`,
      grader runs them outside the notebook's kernel (tamper-resistant); omitted: unchanged
  otter-edge autograder build COURSE ASSIGNMENT [--registry HOST:PORT/PATH] [--registry-auth FILE]
                           [--ca-bundle PEM] [--log-dir DIR]
      build the assignment's environment image (its zip's requirements on the grading image) on this
      machine's Docker engine and push it to the fleet's registry (OTTER_EDGE_ENVIRONMENT_REGISTRY),
      so that runners pull it instead of building it while students wait
  otter-edge passbacks list [--state pending|retrying|delivered|dead|superseded|disabled]
  otter-edge passbacks retry ID                               send a dead or retrying grade again now
  otter-edge tokens create runner|staff|admin NAME [--course C]  issue a token (printed once; staff need --course)
  otter-edge tokens list
  otter-edge tokens revoke ID                                 revoke now; a runner using it is disconnected
  otter-edge lti13 register --issuer ISS --client-id ID --auth-url URL --token-url URL --jwks-url URL
                           --deployment-id ID [--deployment-id ID]...
      register (or update) an LTI 1.3 platform: launches from it are checked against these, and
      grades of students who launched from it go to its AGS line items
  otter-edge lti13 platforms                                  list registered LTI 1.3 platforms
  otter-edge lti13 key [--kid KID]                            print LTI13_TOOL_KEYS with a new signing key first
      and the current keys (LTI13_TOOL_KEYS in the environment) after it; set it with wrangler secret put
  otter-edge lti13 canvas-config --tool-url URL [--title T]   print a Canvas developer key (Paste JSON)
  otter-edge stats                                            queue depth, leases, runners
  otter-edge regrade start COURSE ASSIGNMENT [--submission ID]... [--user U] [--only-outdated]
                           [--never-lower] [--dry-run] [--wait]
      grade submissions again with the assignment's current autograder, behind new submissions:
      all of the assignment, one student's (--user) or listed ones (--submission, repeatable);
      --only-outdated skips those already graded by the current autograder; --never-lower keeps a
      higher old score; --dry-run grades and reports which scores would change, changing nothing;
      --wait prints progress until it ends. Grades the LMS holds are re-posted only where they change.
  otter-edge regrade status ID [--wait]                      progress, outcome counts, changed scores
  otter-edge regrade cancel ID                               stop; what was applied stays
  otter-edge regrade list COURSE
  otter-edge grades export --course C [--section S] [--assignment A] [--since T] [--until T]
                           [--policy all|latest|best] [--out FILE] [--local [--persist-to DIR] | --remote]
      grades as CSV (userid,grade,section,lab,timestamp,course,assignment,submission_id,passback_state);
      since inclusive, until exclusive (ISO-8601, UTC unless an offset is given); latest/best: one row per
      student and assignment. Source: the gateway's staff API (admin or the course's staff token) by default;
      --local reads the wrangler dev local D1 (wrangler d1 execute DB --local); --remote the deployed D1
      (wrangler d1 execute DB --remote: needs a Cloudflare login; not exercised by the tests, which have no account)

Options: --gateway URL (OTTER_EDGE_URL, default http://127.0.0.1:8787)
         --admin-token TOKEN (OTTER_EDGE_ADMIN_TOKEN; for grades export also a staff token of the course)
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { gateway: { type: "string" }, "admin-token": { type: "string" }, "timeout-seconds": { type: "string" }, isolation: { type: "string" }, state: { type: "string" }, course: { type: "string" }, help: { type: "boolean" },
      section: { type: "string" }, assignment: { type: "string" }, since: { type: "string" }, until: { type: "string" }, policy: { type: "string" }, out: { type: "string" },
      local: { type: "boolean" }, remote: { type: "boolean" }, "persist-to": { type: "string" }, "page-size": { type: "string" },
      submission: { type: "string", multiple: true }, user: { type: "string" }, "only-outdated": { type: "boolean" }, "never-lower": { type: "boolean" },
      "dry-run": { type: "boolean" }, wait: { type: "boolean" },
      issuer: { type: "string" }, "client-id": { type: "string" }, "auth-url": { type: "string" }, "token-url": { type: "string" }, "jwks-url": { type: "string" },
      "deployment-id": { type: "string", multiple: true }, kid: { type: "string" }, "tool-url": { type: "string" }, title: { type: "string" },
      registry: { type: "string" }, "registry-auth": { type: "string" }, "ca-bundle": { type: "string" }, "log-dir": { type: "string" } },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  // Commands that need no gateway.
  if (positionals.join(" ") === "lti13 key") {
    process.stdout.write(`${await rotatedToolKeys(process.env.LTI13_TOOL_KEYS, values.kid)}\n`);
    return 0;
  }
  if (positionals.join(" ") === "lti13 canvas-config" && values["tool-url"]) {
    print(canvasDeveloperKey(values["tool-url"], values.title));
    return 0;
  }
  const token = values["admin-token"] ?? process.env.OTTER_EDGE_ADMIN_TOKEN;
  if (!token && !values.local && !values.remote) {
    process.stderr.write("otter-edge: an admin token is required (--admin-token or OTTER_EDGE_ADMIN_TOKEN)\n");
    return 2;
  }
  const client = new AdminClient(values.gateway ?? process.env.OTTER_EDGE_URL ?? "http://127.0.0.1:8787", token ?? "");
  const [group, action, ...rest] = positionals;
  switch (`${group} ${action ?? ""}`.trim()) {
    case "config load":
      if (!rest[0]) break;
      print(await client.loadConfig(rest[0]));
      return 0;
    case "autograder upload":
      if (rest.length < 3) break;
      if (values.isolation !== undefined && values.isolation !== "kernel" && values.isolation !== "grader") break;
      print(await client.uploadAutograder(rest[0]!, rest[1]!, rest[2]!, values["timeout-seconds"] ? Number(values["timeout-seconds"]) : undefined, values.isolation));
      return 0;
    case "autograder build":
      if (rest.length < 2) break;
      print(
        await buildAutograderEnvironment(client, rest[0]!, rest[1]!, {
          registry: values.registry ?? process.env.OTTER_EDGE_ENVIRONMENT_REGISTRY,
          registryAuthFile: values["registry-auth"] ?? process.env.OTTER_EDGE_ENVIRONMENT_REGISTRY_AUTH_FILE,
          caBundle: values["ca-bundle"] ?? process.env.OTTER_EDGE_BUILD_CA_BUNDLE,
          logDir: values["log-dir"],
        }),
      );
      return 0;
    case "passbacks list":
      print(await client.listPassbacks(values.state));
      return 0;
    case "passbacks retry":
      if (!rest[0]) break;
      print(await client.retryPassback(Number(rest[0])));
      return 0;
    case "tokens create": {
      const kind = rest[0];
      if ((kind !== "runner" && kind !== "staff" && kind !== "admin") || !rest[1]) break;
      print(await client.createToken(kind, rest[1], values.course));
      return 0;
    }
    case "tokens list":
      print(await client.listTokens());
      return 0;
    case "tokens revoke":
      if (!rest[0]) break;
      print(await client.revokeToken(rest[0]));
      return 0;
    case "lti13 register": {
      const { issuer, "client-id": clientId, "auth-url": authUrl, "token-url": tokenUrl, "jwks-url": jwksUrl, "deployment-id": deploymentIds } = values;
      if (!issuer || !clientId || !authUrl || !tokenUrl || !jwksUrl || !deploymentIds?.length) break;
      print(await client.registerLti13Platform({ issuer, client_id: clientId, auth_url: authUrl, token_url: tokenUrl, jwks_url: jwksUrl, deployment_ids: deploymentIds }));
      return 0;
    }
    case "lti13 platforms":
      print(await client.listLti13Platforms());
      return 0;
    case "stats":
      print(await client.stats());
      return 0;
    case "regrade start": {
      if (rest.length < 2) break;
      const request = {
        ...(values.submission ? { submission_ids: values.submission } : {}),
        ...(values.user ? { user: values.user } : {}),
        only_outdated: Boolean(values["only-outdated"]),
        never_lower: Boolean(values["never-lower"]),
        dry_run: Boolean(values["dry-run"]),
      };
      const started = await client.startRegrade(rest[0]!, rest[1]!, request);
      print(values.wait ? await followRegrade(client, started) : started);
      return 0;
    }
    case "regrade status": {
      if (!rest[0]) break;
      const current = await client.regrade(Number(rest[0]));
      print(values.wait ? await followRegrade(client, current) : current);
      return 0;
    }
    case "regrade cancel":
      if (!rest[0]) break;
      print(await client.cancelRegrade(Number(rest[0])));
      return 0;
    case "regrade list":
      if (!rest[0]) break;
      print(await client.listRegrades(rest[0]));
      return 0;
    case "grades export":
      await exportGrades({ ...values, persistTo: values["persist-to"], pageSize: values["page-size"] ? Number(values["page-size"]) : undefined }, () => client);
      return 0;
  }
  process.stderr.write(`otter-edge: unknown or incomplete command "${positionals.join(" ")}"\n\n${HELP}`);
  return 2;
}

/** Prints a progress line to stderr whenever it moves, until the regrade ends; returns the last answer. */
async function followRegrade(client: AdminClient, first: RegradeProgress): Promise<RegradeProgress> {
  let current = first;
  let last = "";
  for (;;) {
    const o = current.outcomes;
    const line = `regrade ${current.id}: ${current.state}, ${current.done}/${current.total} done (changed ${(o.changed ?? 0) + (o.would_change ?? 0)}, unchanged ${(o.unchanged ?? 0) + (o.would_stay ?? 0)}, kept higher ${o.kept_higher ?? 0}, failed ${current.progress.failed ?? 0})`;
    if (line !== last) process.stderr.write(`${line}\n`);
    last = line;
    if (current.state !== "running") return current;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    current = await client.regrade(current.id);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`otter-edge: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
