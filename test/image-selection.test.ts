import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import Docker from "dockerode";
import { strToU8, zipSync } from "fflate";
import { pack } from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerSandbox, OTTER_VERSION_LABEL, SANDBOX_CONTRACT, SANDBOX_LABEL } from "../runner/src/grading/docker-sandbox.js";
import { InfrastructureError } from "../runner/src/grading/errors.js";

/**
 * A runner whose engine holds two grading images grades each job with the image whose
 * org.otter-edge.otter-version label matches the otter-grader version the assignment pins, and
 * refuses a version it does not hold with a reason an operator can act on.
 *
 * Real parts: a private dockerd (its own network namespace, data, exec root, socket and
 * containerd; no bridge, no iptables rules), so the two test images never show up in the grading
 * images that other runners on this machine's shared engine announce; images imported there whose
 * entry point is a shell script writing a results.json that names its image; the runner's real
 * DockerSandbox.
 */
const VERSIONS = ["7.1.0", "7.2.0"];
/** Imported without a tag, like an image pulled by digest (deploy/k8s pulls grading images as name@sha256:…). */
const UNTAGGED = "7.4.0";
let dir: string;
let dockerd: ChildProcess;
let docker: Docker;

/** Resolves once dockerd says its API listens on our socket; rejects if it exits first. */
function startDockerd(root: string): Promise<ChildProcess> {
  writeFileSync(join(root, "daemon.json"), "{}"); // not the machine's /etc/docker/daemon.json
  // In a network namespace of its own: a dockerd without a bridge deletes the host's docker0 at
  // start (libnetwork's removeDefaultBridgeInterface), which would cut the shared engine's bridge.
  // `unshare` execs dockerd, so the child's pid is dockerd's.
  const child = spawn(
    "unshare",
    [
      "--net",
      "dockerd",
      `--config-file=${root}/daemon.json`,
      `--data-root=${root}/data`,
      `--exec-root=${root}/exec`,
      `--pidfile=${root}/docker.pid`,
      `--host=unix://${root}/docker.sock`,
      "--bridge=none",
      "--iptables=false",
      "--ip-masq=false",
      "--containerd-namespace=otter-edge-image-test",
      "--containerd-plugins-namespace=otter-edge-image-test-plugins",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  return new Promise((resolve, reject) => {
    child.stderr!.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes(`API listen on ${root}/docker.sock`)) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`dockerd exited (${code}) before listening:\n${log.slice(-2000)}`)));
  });
}

/** A root filesystem with the host's dash as /bin/sh and an `otter` that writes results naming its image. */
function rootfs(version: string): Readable {
  const tar = pack();
  const file = (name: string, content: Buffer | string, mode = 0o644) => tar.entry({ name, mode, uid: 0, gid: 0 }, content);
  for (const d of ["bin", "lib", "lib64", "lib/x86_64-linux-gnu", "usr", "usr/local", "usr/local/bin", "tmp", "job", "home", "home/grader"]) {
    tar.entry({ name: d, type: "directory", mode: 0o755 });
  }
  file("bin/sh", readFileSync("/bin/dash"), 0o755);
  file("lib/x86_64-linux-gnu/libc.so.6", readFileSync("/lib/x86_64-linux-gnu/libc.so.6"), 0o755);
  file("lib64/ld-linux-x86-64.so.2", readFileSync("/lib64/ld-linux-x86-64.so.2"), 0o755);
  // The image contract (uid-split-1): started as root with only SETUID/SETGID/SETPCAP, the entry point
  // becomes the grader uid (the host's setpriv, as the real image does) and writes the results.
  file("usr/bin/setpriv", readFileSync("/usr/bin/setpriv"), 0o755);
  file("lib/x86_64-linux-gnu/libcap-ng.so.0", readFileSync("/lib/x86_64-linux-gnu/libcap-ng.so.0"), 0o755);
  for (const d of ["opt", "opt/otter-edge"]) tar.entry({ name: d, type: "directory", mode: 0o755 });
  file("opt/otter-edge/grade", "#!/bin/sh\nexec /usr/bin/setpriv --reuid=10001 --regid=10001 --clear-groups /bin/sh /opt/otter-edge/write-results\n", 0o755);
  file(
    "opt/otter-edge/write-results",
    `printf '{"tests": [{"name": "image", "score": 1, "max_score": 1, "visibility": "visible", "output": "${version}"}]}' > /job/out/results.json\n`,
  );
  tar.finalize();
  return tar;
}

async function importImage(version: string, tagged = true) {
  const name = tagged ? { repo: "otter-edge-test/grading", tag: version } : {};
  const stream = await docker.importImage(rootfs(version) as never, { ...name, changes: `LABEL ${OTTER_VERSION_LABEL}=${version} ${SANDBOX_LABEL}=${SANDBOX_CONTRACT}` });
  await new Promise((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve(undefined))));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "oe-img-"));
  dockerd = await startDockerd(dir);
  docker = new Docker({ socketPath: join(dir, "docker.sock") });
  for (const v of VERSIONS) await importImage(v);
  await importImage(UNTAGGED, false);
}, 120_000);

afterAll(async () => {
  if (dockerd && dockerd.exitCode === null) {
    const exited = new Promise((resolve) => dockerd.once("exit", resolve));
    dockerd.kill("SIGTERM");
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 120_000);

const sandbox = () =>
  new DockerSandbox(docker, { memoryBytes: 256 * 1024 ** 2, nanoCpus: 1e9, pidsLimit: 64, tmpfsBytes: 16 * 1024 ** 2 }, { runnerName: "image-selection-test", killGraceMs: 10_000 });

const job = (otterVersion: string) => ({
  jobId: `job-${otterVersion}`,
  notebook: Buffer.from("{}"),
  // A zip without requirements: the job grades in the grading image itself (these images hold no pip).
  autograder: Buffer.from(zipSync({ "otter_config.json": strToU8("{}") })),
  otterVersion,
  timeoutMs: 60_000,
  isolation: "kernel" as const,
  signal: new AbortController().signal,
});

describe("grading image per otter-grader version", () => {
  it("announces every version its engine holds an image for", async () => {
    expect((await sandbox().otterVersions()).sort()).toEqual([...VERSIONS, UNTAGGED]);
  });

  it.each([...VERSIONS, UNTAGGED])("grades an assignment pinning otter-grader %s with that version's image", async (version) => {
    const run = await sandbox().run(job(version));
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.results!.toString()).tests[0].output).toBe(version);
    // The container is removed after the result is out; wait for it, so the next test starts clean.
    await run.cleanup;
  });

  it("refuses a version it holds no image for, as an infrastructure error naming the version", async () => {
    const refused = sandbox().run(job("7.3.0"));
    await expect(refused).rejects.toBeInstanceOf(InfrastructureError);
    await expect(refused).rejects.toThrow("no grading image for otter-grader 7.3.0 on this node");
    // Nothing was started for it.
    expect(await docker.listContainers({ all: true })).toEqual([]);
  });

  it("leaves no container or volume behind after grading", async () => {
    // run() returns before the container is removed (the grade is reported first); cleanup is that removal.
    await (await sandbox().run(job(VERSIONS[0]!))).cleanup;
    expect(await docker.listContainers({ all: true })).toEqual([]);
    expect((await docker.listVolumes()).Volumes ?? []).toEqual([]);
  });
});
