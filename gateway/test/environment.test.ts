import { SELF, env } from "cloudflare:test";
import { strToU8, zipSync } from "fflate";
import { describe, expect, it, vi } from "vitest";
import { ADMIN, ALICE, BASE, TestRunner, adminFetch, gradedOutcome, setUpAssignment, status, submit, uniqueAssignment } from "./helpers.js";

/**
 * What an autograder.zip asks to have installed is read at upload: answered (what the runners will
 * build, keyed by its hash), or refused with the reason when it cannot be built. Unknown packages
 * and versions are found against the real package index this machine's pip uses (PACKAGE_INDEX_URL).
 */
function zipWith(files: Record<string, string>): Uint8Array {
  return zipSync({
    "otter_config.json": strToU8("{}"),
    "tests/q1.py": strToU8("OK_FORMAT = True\n"),
    ...Object.fromEntries(Object.entries(files).map(([name, text]) => [name, strToU8(text)])),
  });
}

async function upload(files: Record<string, string>) {
  const a = uniqueAssignment("environment");
  await setUpAssignment(a);
  const res = await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder`, { method: "PUT", body: zipWith(files) });
  return { status: res.status, body: (await res.json()) as Record<string, any>, assignment: a };
}

const OTTER_YML = (conda: string[], pip: string[]) =>
  ["name: otter-env", "channels:", "  - conda-forge", "dependencies:", ...conda.map((c) => `  - ${c}`), "  - pip:", "      - otter-grader[grading,plugins]==7.0.0", ...pip.map((p) => `      - ${p}`), ""].join("\n");

describe("an autograder.zip's environment at upload", () => {
  it("answers what will be installed: requirements.txt and environment.yml (pip and conda), keyed by a hash of the spec", async () => {
    const { status, body } = await upload({
      "requirements.txt": "otter-grader==7.0.0\ntabulate==0.9.0   # tables\nSortedContainers>=2\n",
      "environment.yml": OTTER_YML(["python=3.11", "pip", "jupyter_server", "conda-forge::toolz=0.12"], ["humanize"]),
    });
    expect(status).toBe(200);
    expect(body.environment).toMatchObject({
      requirements: ["humanize", "jupyter-server", "sortedcontainers>=2", "tabulate==0.9.0", "toolz==0.12.*"],
      from_conda: [
        { conda: "jupyter_server", pip: "jupyter-server" },
        { conda: "conda-forge::toolz=0.12", pip: "toolz==0.12.*" },
      ],
      python: "==3.11.*",
      warnings: [],
      index_checked: true,
    });
    expect(body.environment.hash).toMatch(/^[0-9a-f]{64}$/);
    // The same spec written differently is the same environment: one image for both.
    const again = await upload({
      "requirements.txt": "tabulate == 0.9.0\nsortedcontainers >= 2\nhumanize\ntoolz==0.12.*\njupyter-server\notter-grader==7.0.0\n",
    });
    expect(again.body.environment.hash).toBe(body.environment.hash);
  });

  it("gives the current zip back to admins as uploaded (otter-edge autograder build reads it), and names a missing assignment", async () => {
    const zip = zipWith({ "requirements.txt": "otter-grader==7.0.0\ntabulate==0.9.0\n" });
    const a = uniqueAssignment("environment-download");
    await setUpAssignment(a);
    const put = (await (await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder`, { method: "PUT", body: zip })).json()) as Record<string, any>;
    const res = await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/zip");
    expect(res.headers.get("x-otter-edge-sha256")).toBe(put.sha256);
    expect(res.headers.get("x-otter-edge-otter-version")).toBe("7.0.0");
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(zip);
    const missing = await adminFetch(`/assignments/${a.course}/no-such-assignment/autograder`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: "unknown_assignment" });
  });

  it("uses the grading image as it is when the zip asks for nothing beyond otter", async () => {
    const { status, body } = await upload({ "requirements.txt": "otter-grader==7.0.0\n" });
    expect(status).toBe(200);
    expect(body.environment).toMatchObject({ hash: null, requirements: [], index_checked: false });
  });

  it("grades another Python 3 on the image's CPython 3.11 and says so; refuses Python 2", async () => {
    const newer = await upload({ "environment.yml": OTTER_YML(["python=3.13", "pip"], []) });
    expect(newer.status).toBe(200);
    expect(newer.body.environment.warnings.join(" ")).toMatch(/python 3\.13.*CPython 3\.11/);
    const old = await upload({ "environment.yml": OTTER_YML(["python=2.7", "pip"], []) });
    expect([old.status, old.body.error]).toEqual([400, "python_version"]);
  });

  it.each([
    ["a line that is not a requirement", { "requirements.txt": "otter-grader==7.0.0\ntabulate===\n" }, "invalid_requirement", /tabulate===/],
    ["a pip option", { "requirements.txt": "otter-grader==7.0.0\n--index-url http://10.0.0.1/simple\ntabulate\n" }, "unsupported_requirement", /pip options/],
    ["a VCS link", { "requirements.txt": "otter-grader==7.0.0\ngit+https://example.org/x.git\n" }, "unsupported_requirement", /direct URLs/],
    ["a conda-only package", { "environment.yml": OTTER_YML(["python=3.11", "r-base>=4"], []) }, "conda_only_package", /r-base/],
    ["a package the index does not have", { "requirements.txt": "otter-grader==7.0.0\ntabulate\nno-such-package-otter-edge-test\n" }, "unknown_package", /no-such-package-otter-edge-test/],
    ["a version the index does not have", { "requirements.txt": "otter-grader==7.0.0\ntabulate==99.1.0\n" }, "no_matching_version", /tabulate==99\.1\.0.*latest: .*0\.9\.0/],
    ["broken YAML", { "environment.yml": "dependencies: [pip\n  - otter-grader==7.0.0" }, "invalid_environment_yml", /YAML/],
  ])("refuses %s at upload with a specific error, keeping the assignment's current zip", async (_label, files, code, message) => {
    const { status, body, assignment } = await upload({ "requirements.txt": "otter-grader==7.0.0\n", ...files });
    expect([status, body.error]).toEqual([400, code]);
    expect(body.message).toMatch(message);
    // setUpAssignment's zip is still the assignment's: a refused upload changed nothing.
    const current = await adminFetch(`/assignments/${assignment.course}/${assignment.assignment}/autograder`, { method: "PUT", body: zipWith({ "requirements.txt": "otter-grader==7.0.0\n" }) });
    expect(current.status).toBe(200);
  });
});

async function staffLogin(): Promise<string> {
  const res = await SELF.fetch(`${BASE}/staff/login`, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: BASE },
    body: new URLSearchParams({ token: ADMIN, next: "/staff" }).toString(),
  });
  return (res.headers.get("set-cookie") ?? "").split(";")[0]!;
}

describe("an assignment whose environment cannot be installed", () => {
  const staffCookie = staffLogin;

  it("holds its jobs (never graded 0), tells staff why, and grades them with the next zip uploaded", async () => {
    const a = uniqueAssignment("environment-held");
    await setUpAssignment(a);
    const put = (files: Record<string, string>) =>
      adminFetch(`/assignments/${a.course}/${a.assignment}/autograder`, { method: "PUT", body: zipWith({ "requirements.txt": `otter-grader==${a.otterVersion}\n`, ...files }) }).then(
        async (r) => (await r.json()) as Record<string, any>,
      );
    const broken = await put({ "requirements.txt": `otter-grader==${a.otterVersion}\ntabulate==0.9.0\ntabulate==0.8.10\n` });
    const runner = await TestRunner.connect("runner-environment", { capacity: 2, otterVersions: [a.otterVersion] });

    const first = await submit(a);
    const lease = await runner.next("lease");
    expect(lease.job.autograder.sha256).toBe(broken.sha256);
    const pipSays = "ERROR: Cannot install tabulate==0.8.10 and tabulate==0.9.0 because these package versions have conflicting dependencies.";
    runner.send({ type: "result", lease: lease.lease, outcome: { kind: "environment_failed", environment: broken.environment.hash, message: pipSays } });
    expect((await runner.next("ack")).accepted).toBe(true);

    // The student is told why it waits; the job is not failed and not graded.
    const waiting = (await status(first.id)).body;
    expect(waiting).toMatchObject({ status: "queued", waiting_for: "environment", score: null });
    // A later submission of the same assignment waits too, without a runner trying the build again.
    const second = await submit(a);
    const stats = (await (await adminFetch("/stats")).json()) as { queue: { waiting_for_environment: number } };
    expect(stats.queue.waiting_for_environment).toBeGreaterThanOrEqual(2);
    expect(runner.has("lease")).toBe(false);
    // Staff see pip's reason on the assignment page.
    const staffPage = await (await SELF.fetch(`${BASE}/staff/courses/${a.course}/assignments/${a.assignment}`, { headers: { cookie: await staffCookie() } })).text();
    expect(staffPage).toContain('id="environment-failed"');
    expect(staffPage).toContain("Cannot install tabulate==0.8.10 and tabulate==0.9.0");

    // A fixed zip: both jobs are queued again with it, and graded.
    const fixed = await put({ "requirements.txt": `otter-grader==${a.otterVersion}\ntabulate==0.9.0\n` });
    expect(fixed.resumed_jobs).toBe(2);
    const leases = [await runner.next("lease"), await runner.next("lease")];
    expect(leases.map((l) => l.job.submissionId).sort()).toEqual([first.id, second.id].sort());
    for (const l of leases) {
      expect(l.job.autograder.sha256).toBe(fixed.sha256);
      runner.send({ type: "result", lease: l.lease, outcome: gradedOutcome(1) });
      expect((await runner.next("ack")).accepted).toBe(true);
    }
    expect((await status(first.id)).body).toMatchObject({ status: "graded", score: 1, waiting_for: null });
    const after = await (await SELF.fetch(`${BASE}/staff/courses/${a.course}/assignments/${a.assignment}`, { headers: { cookie: await staffCookie() } })).text();
    expect(after).not.toContain('id="environment-failed"');
    runner.close();
  });
});

describe("a job whose environment a runner is building", () => {
  it("tells its student 'preparing the environment' until it is graded; progress on a stale lease changes nothing", async () => {
    const a = uniqueAssignment("environment-building");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-building", { capacity: 1, otterVersions: [a.otterVersion] });
    const submission = await submit(a);
    const lease = await runner.next("lease");

    runner.send({ type: "progress", lease: { jobId: lease.lease.jobId, token: "f".repeat(32) }, stage: "preparing_environment" });
    runner.send({ type: "progress", lease: lease.lease, stage: "preparing_environment" });
    await vi.waitFor(async () => expect((await status(submission.id)).body).toMatchObject({ status: "leased", waiting_for: "environment_build" }), { timeout: 10_000 });
    const events = (await status(submission.id)).body.events as Array<{ state: string }>;
    expect(events.filter((e) => e.state === "preparing_environment")).toHaveLength(1);
    const studentPage = () => SELF.fetch(`${BASE}/services/otter_grade/s/${submission.id}`, { headers: { authorization: `token ${ALICE}` } }).then((r) => r.text());
    expect(await studentPage()).toContain('id="preparing-environment"');

    // The result says how the environment came to the node: staff see it, with the end of pip's log.
    const hash = "a".repeat(64);
    await env.DB.prepare("UPDATE assignments SET environment_hash = ?1 WHERE course = ?2 AND assignment = ?3").bind(hash, a.course, a.assignment).run();
    const prepared = { hash, how: "built", seconds: 41.25, log: "Successfully installed tabulate-0.9.0 <b>" };
    runner.send({ type: "result", lease: lease.lease, outcome: { ...gradedOutcome(1), environment: prepared } });
    expect((await runner.next("ack")).accepted).toBe(true);
    expect((await status(submission.id)).body).toMatchObject({ status: "graded", waiting_for: null });
    expect(await studentPage()).not.toContain('id="preparing-environment"');
    const staffPage = () => SELF.fetch(`${BASE}/staff/courses/${a.course}/assignments/${a.assignment}`, { headers: { cookie: staffCookie } }).then((r) => r.text());
    const staffCookie = await staffLogin();
    await vi.waitFor(async () => expect(await staffPage()).toContain('id="environment-build"'), { timeout: 10_000 });
    expect(await staffPage()).toContain("built on runner");
    expect(await staffPage()).toContain("Successfully installed tabulate-0.9.0 &lt;b&gt;");
    // A zip with another environment: what was said about the old one is gone.
    await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder`, { method: "PUT", body: zipWith({ "requirements.txt": `otter-grader==${a.otterVersion}\ntabulate==0.9.0\n` }) });
    expect(await staffPage()).not.toContain('id="environment-build"');
    runner.close();
  });
});
