import { html, raw } from "hono/html";
import type { passbacks } from "../db/schema.js";
import { type SubmissionDetail, type Viewer, outputVisible, waitingFor } from "../submissions/detail.js";
import { type Html, when } from "./layout.js";

/**
 * The submission page (`GET /s/:id`): where a submission is (received → grading → graded → in the
 * gradebook) and its per-test feedback. The live part is a fragment the page's script fetches again
 * until nothing can change any more, so everything, updates included, is escaped on the server.
 */

const PASSBACK_FINAL = new Set(["delivered", "dead", "superseded", "disabled"]);

/** Nothing on the page will change by itself: graded or failed, and the gradebook has its answer. */
export function isSettled({ row, passback }: SubmissionDetail): boolean {
  if (row.status !== "graded" && row.status !== "failed") return false;
  return !passback || PASSBACK_FINAL.has(passback.state);
}

const VERDICTS: Record<string, string> = {
  graded: "Graded",
  timeout: "Stopped: the notebook ran past the time limit",
  out_of_memory: "Stopped: the notebook used too much memory",
  autograder_failed: "The autograder could not run the notebook",
};

function passbackLine(p: typeof passbacks.$inferSelect | null): Html | string {
  if (!p) return "";
  const text: Record<string, string> = {
    pending: "Sending the grade to the gradebook…",
    retrying: `The gradebook has not confirmed yet (try ${p.attempts}); it is retried automatically.`,
    delivered: "The gradebook confirmed your grade.",
    dead: "The grade could not be delivered to the gradebook; course staff can see this and will resend it.",
    superseded: "Not sent: another of your submissions is the one your gradebook counts.",
    disabled: "Grades for this section are recorded here and not sent to the gradebook.",
  };
  return html`<p>Gradebook: <span id="passback" class="state pb-${p.state}" data-passback="${p.state}">${p.state}</span> ${text[p.state] ?? ""} ${p.deliveredAt ? when(p.deliveredAt) : ""}</p>`;
}

function steps({ row, passback }: SubmissionDetail): Html {
  const labels = ["Received", "Grading", row.status === "failed" ? "Failed" : "Graded", ...(passback ? ["In the gradebook"] : [])];
  // The step in progress; everything before it is done.
  const now = row.status === "queued" ? 0 : row.status === "leased" ? 1 : passback?.state === "delivered" || !passback ? labels.length : 3;
  return html`<ol class="steps">${labels.map((label, i) => html`<li class="${i < now ? "done" : i === now ? "now" : ""}">${label}</li>`)}</ol>`;
}

function score(row: SubmissionDetail["row"]): Html | string {
  if (row.status !== "graded" || row.score == null) return "";
  return html`<p id="score">Score: <strong>${row.points ?? 0} / ${row.maxPoints ?? 0}</strong> (${Math.round(row.score * 1000) / 10} %) · ${VERDICTS[row.verdict ?? ""] ?? row.verdict ?? ""}</p>`;
}

function tests(viewer: Viewer, detail: SubmissionDetail): Html | string {
  if (detail.tests.length === 0) return "";
  return html`<h2>Tests</h2>
<table id="tests"><thead><tr><th>Test</th><th>Score</th><th>Feedback</th></tr></thead><tbody>
${detail.tests.map(
  (t) => html`<tr data-test="${t.name}" data-visibility="${t.visibility}"><td>${t.name}${t.visibility === "hidden" ? html` <span class="muted">(hidden)</span>` : ""}</td>
<td>${t.maxScore > 0 ? html`${t.score} / ${t.maxScore}` : ""}</td>
<td>${outputVisible(viewer, t.visibility) ? html`<pre>${t.output}</pre>` : html`<span class="muted hidden-output">Hidden test: its output is not shown.</span>`}${
    "principal" in viewer && t.kernelReason ? html`<p class="muted ran-in-kernel">Ran in the student's kernel, as plain otter runs it: ${t.kernelReason}</p>` : ""
  }</td></tr>`,
)}
</tbody></table>`;
}

/** Why it is not graded yet, in the student's words. */
function statusNote(status: string, lastEvent: string | undefined): Html | string {
  switch (waitingFor(status, lastEvent)) {
    case "environment":
      return html` <span class="muted" id="waiting-environment">waiting: the assignment's packages could not be installed; course staff are fixing it, and it will be graded then</span>`;
    case "environment_build":
      return html` <span class="muted" id="preparing-environment">preparing the environment: installing the assignment's packages (once per assignment, a few minutes)</span>`;
    default:
      return status === "queued" ? html` <span class="muted">waiting for a grader</span>` : "";
  }
}

/** The part of the page that changes; `data-final` tells the script to stop asking. */
export function liveFragment(viewer: Viewer, detail: SubmissionDetail): Html {
  const { row, events } = detail;
  const stateLabel = row.status === "leased" ? "grading" : row.status;
  return html`<section id="status" data-state="${row.status}" data-final="${isSettled(detail) ? "true" : "false"}">
<p>Status: <span class="state state-${row.status}">${stateLabel}</span>${statusNote(row.status, events.at(-1)?.state)}</p>
${steps(detail)}
${score(row)}
${row.message ? html`<p id="message">${row.message}</p>` : ""}
${passbackLine(detail.passback)}
${tests(viewer, detail)}
<h2>History</h2>
<table id="events"><tbody>${events.map((e) => html`<tr><td>${when(e.at)}</td><td>${e.state}</td><td>${e.detail}</td></tr>`)}</tbody></table>
</section>`;
}

// Polls the fragment (1 s, backing off to 30 s after errors) until it says it is final.
const LIVE_SCRIPT = `(function () {
  var live = document.getElementById("live"), note = document.getElementById("live-note"), delay = 1000;
  function settled() { var s = live.querySelector("[data-final]"); return s && s.getAttribute("data-final") === "true"; }
  function tick() {
    if (settled()) { note.textContent = ""; return; }
    fetch(live.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (t) { live.innerHTML = t; note.textContent = settled() ? "" : "Updating live."; delay = 1000; setTimeout(tick, delay); })
      .catch(function (e) { note.textContent = "Live updates paused (" + e.message + "); trying again."; delay = Math.min(delay * 2, 30000); setTimeout(tick, delay); });
  }
  setTimeout(tick, delay);
})();`;

export function submissionPage(viewer: Viewer, detail: SubmissionDetail, livePath: string, n: string): Html {
  const { row } = detail;
  return html`<h1>${row.assignment} <span class="muted">· ${row.course}, section ${row.section}</span></h1>
<p class="muted">Submission <span class="code">${row.id}</span>${"principal" in viewer ? html` by <strong id="student">${row.user}</strong>` : ""}, received ${when(row.createdAt)}.</p>
<div id="live" data-live="${livePath}">${liveFragment(viewer, detail)}</div>
<p id="live-note" class="muted" aria-live="polite"></p>
<script nonce="${n}">${raw(LIVE_SCRIPT)}</script>`;
}
