import { html } from "hono/html";
import type { Principal } from "../auth/service-tokens.js";
import { type AssignmentStats, SCORE_BINS } from "./assignment-stats.js";
import { type Html, when } from "./layout.js";

/** Staff pages: sign-in, the list of assignments, and one assignment's dashboard. */

const enc = encodeURIComponent;

export function signInForm(next: string, message = ""): Html {
  return html`<h1>Staff sign-in</h1>
${message ? html`<p id="sign-in-error">${message}</p>` : ""}
<p>Paste your course staff token (from <span class="code">otter-edge tokens create staff NAME --course COURSE</span>).
It is exchanged for a signed cookie that names the token, not the token itself; revoking the token signs you out.</p>
<form method="post" action="/staff/login">
<input type="hidden" name="next" value="${next}">
<label>Staff token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>`;
}

export function devSignInForm(next: string, signedInAs: string | null): Html {
  return html`<h1>Development sign-in</h1>
${signedInAs ? html`<p>Signed in as <strong id="signed-in-as">${signedInAs}</strong>.</p>` : ""}
<p>This gateway runs with development student tokens (DEV_USER_TOKENS). Never enable this in production.</p>
<form method="post" action="/auth/dev-login">
<input type="hidden" name="next" value="${next}">
<label>Student token <input type="password" name="token" required></label>
<button type="submit">Sign in</button>
</form>`;
}

function who(principal: Principal): Html {
  return html`<form class="muted" method="post" action="/staff/logout">Signed in as <strong>${principal.name}</strong> (${principal.role === "staff" ? html`staff of ${principal.course}` : "admin"}).
<button type="submit">Sign out</button></form>`;
}

export function staffIndex(principal: Principal, rows: Array<{ course: string; assignment: string; n: number }>): Html {
  return html`${who(principal)}<h1>Assignments</h1>
${rows.length === 0 ? html`<p>No assignments yet: upload an autograder first.</p>` : ""}
<ul id="assignments">${rows.map((r) => html`<li><a href="/staff/courses/${enc(r.course)}/assignments/${enc(r.assignment)}">${r.course} · ${r.assignment}</a> <span class="muted">(${r.n} submissions)</span></li>`)}</ul>`;
}

const pct = (x: number) => `${Math.round(x * 1000) / 10} %`;

function bars<T>(rows: T[], label: (r: T) => Html | string, value: (r: T) => number, id: string): Html {
  const max = Math.max(1, ...rows.map(value));
  return html`<table id="${id}"><tbody>${rows.map((r) => html`<tr><td>${label(r)}</td><td><meter min="0" max="${max}" value="${value(r)}"></meter> ${value(r)}</td></tr>`)}</tbody></table>`;
}

export function assignmentPage(principal: Principal, course: string, assignment: string, s: AssignmentStats): Html {
  const binLabel = (i: number) => (i === SCORE_BINS - 1 ? `${i * 10}–100 %` : `${i * 10}–${i * 10 + 9.9} %`);
  const base = `/staff/courses/${enc(course)}`;
  return html`${who(principal)}
<p><a href="/staff">All assignments</a></p>
<h1>${assignment} <span class="muted">· ${course}</span></h1>
<p id="totals">${s.totals.submissions} submissions from ${s.totals.students} students: ${s.totals.graded} graded, ${s.totals.failed} failed,
${s.totals.queued} queued, ${s.totals.grading} grading.</p>

<h2>Environment</h2>
${s.environment.status === "failed" ? html`<div id="environment-failed" class="alert"><p><strong>The assignment's packages could not be installed.</strong> Its submissions wait (none is graded 0): upload a fixed autograder.zip and they are graded with it.</p><pre>${s.environment.error ?? ""}</pre></div>` : ""}
<p id="environment">otter-grader ${s.environment.otterVersion}${s.environment.requirements.length ? html`, plus <code>${s.environment.requirements.join(", ")}</code> installed from the package index (environment ${(s.environment.hash ?? "").slice(0, 12)}, built on each runner's first job, or already in the grading image)` : ": the grading image as it is"}.</p>
${s.environment.warnings.map((w) => html`<p class="muted">${w}</p>`)}
${
  s.environment.prepared
    ? html`<details id="environment-build"><summary>Environment ${s.environment.prepared.summary}, ${when(s.environment.prepared.at)}${s.environment.prepared.log ? ": the end of pip's log" : ""}</summary><pre>${s.environment.prepared.log}</pre></details>`
    : ""
}

<h2>Submissions per day (UTC)</h2>
${s.perDay.length ? bars(s.perDay, (r) => r.day, (r) => r.n, "per-day") : html`<p>None yet.</p>`}

<h2>Score distribution <span class="muted">(each student's latest graded submission)</span></h2>
${bars(s.scoreBins.map((n, i) => ({ n, i })), (r) => binLabel(r.i), (r) => r.n, "scores")}

<h2>Tests <span class="muted">(hardest first; each student's latest graded submission)</span></h2>
${s.tests.length === 0 ? html`<p>No graded tests yet.</p>` : html`<table id="test-rates"><thead><tr><th>Test</th><th>Full marks</th><th>Mean score</th><th>Students</th></tr></thead><tbody>
${s.tests.map((t) => html`<tr data-test="${t.name}"><td>${t.name}</td><td><meter min="0" max="1" value="${t.full / t.n}"></meter> ${pct(t.full / t.n)}</td><td>${pct(t.mean)}</td><td>${t.n}</td></tr>`)}
</tbody></table>`}

<h2>Grades the gradebook did not take</h2>
${s.deadPassbacks.length === 0 ? html`<p id="dead-passbacks-none">None: every grade was delivered or is still being retried.</p>` : html`<table id="dead-passbacks"><thead><tr><th>Student</th><th>Submission</th><th>Tries</th><th>Last error</th><th></th></tr></thead><tbody>
${s.deadPassbacks.map(
  (p) => html`<tr data-passback-id="${p.id}"><td>${p.user}</td><td><a href="/s/${enc(p.submission_id)}">${p.submission_id.slice(0, 8)}</a></td><td>${p.attempts} ${when(p.updated_at)}</td><td>${p.last_error ?? ""}</td>
<td><form method="post" action="${base}/passbacks/${p.id}/retry"><input type="hidden" name="back" value="${assignment}"><button type="submit">Retry now</button></form></td></tr>`,
)}
</tbody></table>`}

<h2>Runners online</h2>
<p id="queue">Queue (all courses): ${s.queue.pending} waiting, ${s.queue.leased} being graded${s.queue.waitingForEnvironment ? html`, ${s.queue.waitingForEnvironment} held until their assignment's packages can be installed` : ""}.</p>
${s.runners.length === 0 ? html`<p id="runners-none">No runner is connected: submissions wait in the queue until one is.</p>` : html`<table id="runners"><thead><tr><th>Runner</th><th>Busy / slots</th><th>otter-grader</th><th>Last heard</th></tr></thead><tbody>
${s.runners.map((r) => html`<tr><td>${r.runner}</td><td>${r.holding} / ${r.capacity}</td><td>${r.otterVersions.join(", ")}</td><td>${when(r.lastSeenAt)}</td></tr>`)}
</tbody></table>`}

<h2>Latest submissions</h2>
<table id="recent"><tbody>${s.recent.map((r) => html`<tr><td><a href="/s/${enc(r.id)}">${r.id.slice(0, 8)}</a></td><td>${r.user}</td><td>${r.status}</td><td>${r.score == null ? "" : pct(r.score)}</td><td>${when(r.created_at)}</td></tr>`)}</tbody></table>`;
}
