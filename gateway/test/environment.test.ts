import { strToU8, zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { adminFetch, setUpAssignment, uniqueAssignment } from "./helpers.js";

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
