import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** What the runner exposes to Prometheus (and to the kubelet's probes) on its metrics port. */
export class RunnerMetrics {
  readonly registry = new Registry();
  /** Finished jobs by outcome: a verdict (graded, timeout, out_of_memory, autograder_failed) or infrastructure_error. */
  readonly jobs = new Counter({ name: "otter_edge_runner_jobs_total", help: "Jobs finished, by outcome.", labelNames: ["outcome"], registers: [this.registry] });
  readonly gradingSeconds = new Histogram({
    name: "otter_edge_runner_grading_seconds",
    help: "From lease to result, per job.",
    buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly containerStartSeconds = new Histogram({
    name: "otter_edge_runner_container_start_seconds",
    help: "Container create and start, per job.",
    buckets: [0.05, 0.1, 0.2, 0.5, 1, 2, 5],
    registers: [this.registry],
  });
  readonly queueWaitSeconds = new Histogram({
    name: "otter_edge_runner_queue_wait_seconds",
    help: "How long each leased job waited in the gateway's queue (since it was queued or its retry backoff ended).",
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
    registers: [this.registry],
  });
  readonly busySlots = new Gauge({ name: "otter_edge_runner_busy_slots", help: "Jobs being graded now.", registers: [this.registry] });
  readonly capacity = new Gauge({ name: "otter_edge_runner_capacity", help: "Jobs this runner takes at once.", registers: [this.registry] });
  readonly connected = new Gauge({ name: "otter_edge_runner_gateway_connected", help: "1 while the socket to the gateway is open.", registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Serves /metrics, /healthz (alive) and /readyz (connected to the gateway). */
  listen(port: number, host = "0.0.0.0"): Promise<Server> {
    const server = createServer(async (req, res) => {
      if (req.url === "/metrics") {
        res.writeHead(200, { "content-type": this.registry.contentType });
        res.end(await this.registry.metrics());
      } else if (req.url === "/healthz") {
        res.writeHead(200).end("ok\n");
      } else if (req.url === "/readyz") {
        const ready = (await this.connected.get()).values[0]?.value === 1;
        res.writeHead(ready ? 200 : 503).end(ready ? "ready\n" : "not connected to the gateway\n");
      } else {
        res.writeHead(404).end();
      }
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve(server));
    });
  }
}
