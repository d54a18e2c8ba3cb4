import type { Context } from "hono";
import { html, raw } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ApiError } from "../errors.js";

/**
 * The frame of every HTML page. Values are interpolated through hono's `html` tag, which escapes
 * every string (`& < > " '`); only other `html` fragments pass through unescaped. A per-response
 * nonce CSP allows our one inline script and style and nothing else, so even a missed escape could
 * not run a script.
 */
export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

const STYLE = `
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 1.5rem;color:#1c1c1c}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.8rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}
pre{white-space:pre-wrap;background:#f5f5f5;padding:.5rem;margin:.2rem 0;max-height:24rem;overflow:auto}
.state{display:inline-block;padding:.15rem .6rem;border-radius:1rem;background:#eee;font-weight:600}
.state-graded,.pb-delivered{background:#d7f5dd}.state-failed,.pb-dead{background:#fbd9d9}.state-leased,.pb-retrying,.pb-pending{background:#fff1c2}
ol.steps{list-style:none;padding:0;display:flex;gap:.5rem;flex-wrap:wrap}ol.steps li{padding:.2rem .6rem;border:1px solid #ccc;border-radius:.3rem;color:#888}
ol.steps li.done{color:#1c1c1c;border-color:#3a3}ol.steps li.now{color:#1c1c1c;border-color:#c90;font-weight:600}
.muted{color:#666}.code{font-family:monospace}meter{width:12rem}
form.inline{display:inline}label{display:block;margin:.5rem 0}input[type=password]{width:100%;max-width:30rem}
`;

export function nonce(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

export function pageResponse(c: Context, opts: { title: string; body: (nonce: string) => Html; status?: ContentfulStatusCode }): Response | Promise<Response> {
  const n = nonce();
  c.header("content-security-policy", `default-src 'none'; script-src 'nonce-${n}'; style-src 'nonce-${n}'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`);
  c.header("cache-control", "no-store");
  c.header("x-content-type-options", "nosniff");
  c.header("referrer-policy", "same-origin");
  return c.html(
    html`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${opts.title} · otter-edge</title><style nonce="${n}">${raw(STYLE)}</style></head>
<body>${opts.body(n)}</body>
</html>`,
    opts.status ?? 200,
  );
}

/** An error as a page: the same status and machine-readable code as the JSON API, and what to do. */
export function errorPage(c: Context, err: ApiError, extra: Html | string = ""): Response | Promise<Response> {
  for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
  return pageResponse(c, {
    title: `Error ${err.status}`,
    status: err.status,
    body: () => html`<h1>${err.message}</h1>
<p class="muted">HTTP ${err.status} · <span class="code" id="error-code">${err.code}</span></p>${extra}`,
  });
}

export function when(date: string | null | undefined): Html | string {
  return date ? html`<time datetime="${date}">${date.replace("T", " ").replace(/\.\d+Z$/, "Z")}</time>` : "";
}
