import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../runner/src/config.js";
import { RunnerMetrics } from "../runner/src/metrics.js";

/**
 * The Kubernetes manifests in deploy/k8s: valid for the API (kubeconform -strict, offline schemas
 * from scripts/k8s-tools.sh), and consistent with the runner they run (its env vars, its probe
 * endpoints, its drain time).
 */
const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");
const K8S = join(ROOT, "deploy/k8s");
const scratch = mkdtempSync(join(tmpdir(), "otter-edge-manifests-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function kubeconform(...paths: string[]) {
  return run("bash", [join(ROOT, "scripts/kubeconform.sh"), ...paths]).then(
    ({ stdout }) => ({ code: 0, output: stdout }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, output: err.stdout + err.stderr }),
  );
}

/** YAML through PyYAML in the project venv (the Node side has no YAML parser of its own). */
function loadYaml(path: string): any[] {
  const python = join(ROOT, ".otter-edge/venv/bin/python");
  const json = execFileSync(python, ["-c", "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))", path]);
  return JSON.parse(json.toString());
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => join(dir, f));
}

const docs = yamlFiles(K8S).flatMap((file) => loadYaml(file).map((doc) => ({ file, doc })));
const find = (kind: string) => docs.filter((d) => d.doc.kind === kind).map((d) => d.doc);
const daemonSet = find("DaemonSet")[0];
const deployment = find("Deployment")[0];
const configMap = find("ConfigMap").find((c) => c.metadata.name === "otter-edge-runner");

describe("deploy/k8s manifests", () => {
  it("pass kubeconform -strict for every supported Kubernetes version, with no kind skipped", async () => {
    const { code, output } = await kubeconform(K8S);
    expect(code, output).toBe(0);
    const summaries = output.match(/^Summary: .*$/gm) ?? [];
    expect(summaries.length).toBeGreaterThanOrEqual(2);
    for (const line of summaries) expect(line).toMatch(new RegExp(`${docs.length} resources found .* Valid: ${docs.length}, Invalid: 0, Errors: 0, Skipped: 0`));
  });

  it("fail kubeconform when a field has the wrong type or name, in built-in kinds and in KEDA's", async () => {
    const broken = readFileSync(join(K8S, "daemonset/runner.yaml"), "utf8")
      .replace("containerPort: 9464", 'containerPort: "metrics-port"')
      .replace("periodSeconds: 10", "periodSecond: 10");
    expect(broken).toContain('"metrics-port"');
    writeFileSync(join(scratch, "daemonset.yaml"), broken);
    const scaled = readFileSync(join(K8S, "autoscaled/scaledobject.yaml"), "utf8").replace("minReplicaCount: 1", 'minReplicaCount: "one"');
    writeFileSync(join(scratch, "scaledobject.yaml"), scaled);
    writeFileSync(join(scratch, "unknown-kind.yaml"), "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n");

    const { code, output } = await kubeconform(scratch);
    expect(code).not.toBe(0);
    expect(output).toMatch(/DaemonSet otter-edge-runner is invalid.*containerPort.*got string, want integer/);
    expect(output).toMatch(/DaemonSet otter-edge-runner is invalid.*additional properties 'periodSecond' not allowed/);
    expect(output).toMatch(/ScaledObject otter-edge-runner is invalid.*minReplicaCount.*got string, want integer/);
    expect(output).toMatch(/Gadget g failed validation: could not find schema for Gadget/);
  });

  const runnerPods = [
    ["DaemonSet", daemonSet],
    ["Deployment", deployment],
  ] as const;

  it("run the same pod as a DaemonSet and as the autoscaled Deployment (one runner per node in both)", () => {
    const { affinity, ...deploymentPod } = deployment.spec.template.spec;
    expect(deploymentPod).toEqual(daemonSet.spec.template.spec);
    expect(deployment.spec.template.metadata).toEqual(daemonSet.spec.template.metadata);
    expect(affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey).toBe("kubernetes.io/hostname");
  });

  describe.each(runnerPods)("the runner %s", (_kind, workload) => {
    const pod = workload.spec.template.spec;
    const runner = pod.containers.find((c: any) => c.name === "runner");
    const dockerd = pod.initContainers.find((c: any) => c.name === "dockerd");
    const env: Record<string, string> = {
      ...configMap.data,
      ...Object.fromEntries(runner.env.map((e: any) => [e.name, e.value ?? `from-${Object.keys(e.valueFrom)[0]}`])),
    };

    it("sets only environment variables the runner reads", () => {
      expect(runner.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }]);
      const sources = readdirSync(join(ROOT, "runner/src"), { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"));
      const read = new Set(sources.flatMap((f) => [...readFileSync(join(ROOT, "runner/src", f), "utf8").matchAll(/\benv\.([A-Z][A-Z0-9_]*)/g)].map((m) => m[1])));
      expect(read.size).toBeGreaterThan(10);
      for (const name of Object.keys(env)) expect(read, `${name} is set by the manifest but read nowhere in runner/src`).toContain(name);
    });

    it("configures the runner as intended, and waits long enough for a draining runner", () => {
      const config = loadConfig([], env, (path) => (path === "/var/run/secrets/otter-edge/token" ? "oe_runner_test" : ""));
      if (config === "help") throw new Error("help");
      expect(config).toMatchObject({ token: "oe_runner_test", name: "from-fieldRef", capacity: 2, cacheDir: "/var/cache/otter-edge", unsandboxed: false });
      // The runner exits at most DRAIN + KILL_GRACE after SIGTERM; the kubelet must not SIGKILL it before.
      expect(config.drainMs + config.killGraceMs).toBeLessThan(pod.terminationGracePeriodSeconds * 1000);
      // The token file is the mounted Secret.
      const mount = runner.volumeMounts.find((m: any) => m.name === "runner-token");
      expect(`${mount.mountPath}/token`).toBe(env.OTTER_EDGE_RUNNER_TOKEN_FILE);
      expect(pod.volumes.find((v: any) => v.name === "runner-token").secret.secretName).toBe("otter-edge-runner-token");
      // Grading may use CAPACITY x MEMORY inside the sidecar's cgroup: its limit must hold that.
      const gi = Number(dockerd.resources.limits.memory.replace("Gi", "")) * 1024 ** 3;
      expect(gi).toBeGreaterThan(config.capacity * config.memoryBytes);
    });

    it("reaches the sidecar's engine through the shared socket, and the sidecar outlives the runner", () => {
      const socket = String(env.DOCKER_HOST).replace("unix://", "");
      expect(dockerd.args).toContain(`--host=${env.DOCKER_HOST}`);
      expect(dockerd.args.filter((a: string) => a.startsWith("--host"))).toHaveLength(1);
      expect(dockerd.args).toContain(`--group=${runner.securityContext.runAsGroup}`);
      expect(dockerd.restartPolicy).toBe("Always");
      for (const c of [runner, dockerd]) expect(c.volumeMounts.find((m: any) => m.name === "docker-socket").mountPath).toBe(socket.slice(0, socket.lastIndexOf("/")));
      expect(pod.volumes.find((v: any) => v.name === "docker-socket").emptyDir).toBeDefined();
      expect(runner.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    });

    it("probes the ports and paths the runner's metrics server answers", async () => {
      const port = runner.ports.find((p: any) => p.name === "metrics");
      expect(port.containerPort).toBe(Number(env.OTTER_EDGE_METRICS_PORT));
      const { livenessProbe, readinessProbe, startupProbe } = runner;
      for (const probe of [livenessProbe, readinessProbe, startupProbe]) expect(probe.httpGet.port).toBe("metrics");

      // The real metrics server (on a free port here): alive at once, ready only once connected.
      const metrics = new RunnerMetrics();
      const server = await metrics.listen(0, "127.0.0.1");
      try {
        const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
        expect((await fetch(base + livenessProbe.httpGet.path)).status).toBe(200);
        expect((await fetch(base + startupProbe.httpGet.path)).status).toBe(200);
        expect((await fetch(base + readinessProbe.httpGet.path)).status).toBe(503);
        metrics.connected.set(1);
        expect((await fetch(base + readinessProbe.httpGet.path)).status).toBe(200);
        expect((await fetch(`${base}/no-such-probe`)).status).toBe(404);
      } finally {
        server.close();
      }
    });
  });

  it("scales the Deployment on the gateway's queue demand with the runner token, one slot per job", () => {
    const scaled = find("ScaledObject")[0];
    const auth = find("TriggerAuthentication")[0];
    expect(scaled.spec.scaleTargetRef).toMatchObject({ kind: "Deployment", name: deployment.metadata.name });
    expect(deployment.spec.replicas).toBeUndefined();
    const [trigger] = scaled.spec.triggers;
    expect(trigger).toMatchObject({ type: "metrics-api", metricType: "AverageValue", authenticationRef: { name: auth.metadata.name } });
    expect(new URL(trigger.metadata.url).pathname).toBe("/runner/v1/queue");
    expect(trigger.metadata).toMatchObject({ valueLocation: "demand", authMode: "bearer", targetValue: configMap.data.OTTER_EDGE_CAPACITY });
    expect(auth.spec.secretTargetRef).toEqual([{ parameter: "token", name: "otter-edge-runner-token", key: "token" }]);
  });

  it("keep the placeholder Secret out of the directories an operator applies", () => {
    const secrets = docs.filter((d) => d.doc.kind === "Secret");
    expect(secrets.map((s) => s.file)).toEqual([join(K8S, "examples/runner-token.secret.yaml")]);
    expect(secrets[0]!.doc.stringData.token).toMatch(/^REPLACE/);
  });
});
