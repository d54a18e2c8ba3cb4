#!/usr/bin/env python3
"""A stand-in LMS for testing LTI 1.1 Basic Outcomes grade passback.

It plays the part of edX's outcome service: it accepts `replaceResult`
requests, verifies their OAuth 1.0a signature with `oauthlib` (an
implementation independent of the project's TypeScript signer) and their
`oauth_body_hash` with hashlib, and answers with the same response envelope
edX sends. Tests drive and inspect it through a small JSON API under
`/_control/`. See README.md next to this file.

Usage:
    python lms_standin.py --port 0 --key KEY --secret SECRET
    python lms_standin.py sign-launch --url URL --key K --secret S --param name=value ...
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_TYPE_BODY,
    Client,
    RequestValidator,
    SignatureOnlyEndpoint,
)
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

log = logging.getLogger("lms-standin")

IMS_NS = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0"
XML_CONTENT_TYPES = ("application/xml", "text/xml")
FAULT_MODES = ("http_500", "hang", "failure", "unparseable")
# How long a "hang" keeps the connection open without answering. Long enough
# that any sane client times out first; /_control/reset releases it early.
HANG_SECONDS = 120
# The spec asks for a decimal in 0.0..1.0. Exponent forms such as "1e-7" (what
# JavaScript's Number#toString gives for tiny numbers) are rejected on purpose
# so the project's XML builder cannot rely on lenient LMSes.
DECIMAL_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body_hash(body: bytes) -> str:
    """oauth_body_hash as defined by the OAuth Request Body Hash extension."""
    return base64.b64encode(hashlib.sha1(body).digest()).decode("ascii")


@dataclass(frozen=True)
class Config:
    key: str
    secret: str
    timestamp_window: int = 300
    # "edx": byte layout of edX's xblock-lti-consumer response (the request's
    # message id echoed in imsx_messageIdentifier, an empty
    # imsx_messageRefIdentifier, no imsx_operationRefIdentifier).
    # "ims": the layout of the IMS LTI 1.1 implementation guide, section 6.1.1.
    style: str = "edx"
    # edX answers an OAuth failure with HTTP 200 and codeMajor "failure"; other
    # LMSes use 401. Both carry the failure envelope.
    auth_failure_status: int = 200


class Rejected(Exception):
    """A request the LMS refuses; `reason` is what /_control/rejected reports."""

    def __init__(self, reason: str, description: str, code_major: str = "failure"):
        super().__init__(description)
        self.reason = reason
        self.description = description
        self.code_major = code_major


class State:
    """Everything tests can observe or change; shared by handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response_ids = 0
        self.hang_release = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.grades: list[dict] = []
            self.rejected: list[dict] = []
            self.requests: list[dict] = []
            self._nonces: set[tuple[str, str, str]] = set()
            self._mode = "ok"
            self._mode_remaining = 0
            # Wake any handler stuck in "hang" and arm a fresh event for later ones.
            self.hang_release.set()
            self.hang_release = threading.Event()

    def set_mode(self, mode: str, count: int) -> None:
        with self._lock:
            self._mode, self._mode_remaining = mode, count

    def take_mode(self) -> str:
        with self._lock:
            if self._mode_remaining <= 0:
                return "ok"
            self._mode_remaining -= 1
            return self._mode

    def remember_nonce(self, key: str, timestamp: str, nonce: str) -> bool:
        """Record a nonce; False if this (key, timestamp, nonce) was seen before."""
        entry = (key, timestamp, nonce)
        with self._lock:
            if entry in self._nonces:
                return False
            self._nonces.add(entry)
            return True

    def next_response_id(self) -> str:
        with self._lock:
            self._response_ids += 1
            return str(self._response_ids)

    def record(self, kind: str, entry: dict) -> None:
        with self._lock:
            getattr(self, kind).append(entry)

    def snapshot(self, kind: str) -> list[dict]:
        with self._lock:
            return list(getattr(self, kind))


class _Validator(RequestValidator):
    """oauthlib policy for a single LTI consumer key/secret pair."""

    # The stand-in serves plain HTTP on loopback.
    enforce_ssl = False

    def __init__(self, config: Config, state: State) -> None:
        super().__init__()
        self._config = config
        self._state = state

    @property
    def allowed_signature_methods(self):
        return (SIGNATURE_HMAC_SHA1,)

    @property
    def timestamp_lifetime(self):
        return self._config.timestamp_window

    @property
    def dummy_client(self):
        return "unknown-consumer"

    # oauthlib's defaults (alphanumeric, 20-30 characters) are a provider's
    # choice, not part of RFC 5849. LTI consumer keys are whatever the LMS admin
    # typed, and oauth-1.0a's nonces are 32 characters, so only demand non-empty.
    def check_client_key(self, client_key):
        return bool(client_key)

    def check_nonce(self, nonce):
        return bool(nonce)

    def validate_client_key(self, client_key, request):
        return hmac.compare_digest(client_key.encode(), self._config.key.encode())

    def get_client_secret(self, client_key, request):
        # For an unknown key oauthlib asks about dummy_client and still computes a
        # signature (constant-time behaviour); the request fails on the key anyway.
        return self._config.secret if client_key == self._config.key else ""

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request,
                                     request_token=None, access_token=None):
        fresh = self._state.remember_nonce(client_key, timestamp, nonce)
        if not fresh:
            request.validator_log["replayed_nonce"] = True
        return fresh


class OutcomeService:
    """Verifies, parses and answers one outcome request; HTTP-agnostic."""

    def __init__(self, config: Config, state: State) -> None:
        self.config = config
        self.state = state
        self._endpoint = SignatureOnlyEndpoint(_Validator(config, state))

    def handle(self, uri: str, headers: dict, body: bytes) -> tuple[int, str]:
        """Return (HTTP status, response XML) and record the outcome in State.

        `headers` must have lower-case names (HTTP header names are case-insensitive).
        """
        message_id = _message_id_or_none(body)
        try:
            self._check_content_type(headers.get("content-type", ""))
            self._verify_oauth(uri, headers, body)
            parsed = _parse_replace_result(body)
            score = _parse_score(parsed["textString"])
        except Rejected as rej:
            self.state.record("rejected", {
                "reason": rej.reason,
                "description": rej.description,
                "messageId": message_id,
                "receivedAt": _now_iso(),
            })
            log.info("rejected %s: %s", rej.reason, rej.description)
            oauth_failure = rej.reason in _OAUTH_REASONS
            status = self.config.auth_failure_status if oauth_failure else 200
            # edX answers "unknown" when the body fails its XML or score parsing.
            echoed_id = None if rej.reason in ("bad_xml", "bad_score") else message_id
            return status, self.render(rej.code_major, rej.description, echoed_id, "")

        self.state.record("grades", {
            "sourcedId": parsed["sourcedId"],
            "score": float(score),
            "textString": parsed["textString"],
            "language": parsed["language"],
            "messageId": parsed["messageId"],
            "receivedAt": _now_iso(),
        })
        # Same wording as edX, which formats the score as a Python float.
        description = f"Score for {parsed['sourcedId']} is now {float(score)}"
        log.info("accepted: %s", description)
        return 200, self.render("success", description, parsed["messageId"], "<replaceResultResponse/>")

    def _check_content_type(self, content_type: str) -> None:
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in XML_CONTENT_TYPES:
            raise Rejected("bad_content_type",
                           f"Content-Type must be application/xml, got {content_type!r}")

    def _verify_oauth(self, uri: str, headers: dict, body: bytes) -> None:
        try:
            valid, request = self._endpoint.validate_request(
                uri, http_method="POST", body=body.decode("utf-8", "replace"), headers=headers)
        except ValueError as err:  # e.g. an Authorization header that is not OAuth
            raise Rejected("bad_oauth_params", f"OAuth verification error: {err}") from err
        if not valid:
            raise self._classify_oauth_failure(request)

        # oauthlib verified the signature over all protocol parameters, including
        # oauth_body_hash, but never looks at the body itself: that is our job.
        sent = request.oauth_params.get("oauth_body_hash")
        if sent is None:
            raise Rejected("bad_body_hash", "OAuth verification error: oauth_body_hash is missing.")
        if not hmac.compare_digest(sent.encode(), body_hash(body).encode()):
            raise Rejected("bad_body_hash",
                           "OAuth verification error: OAuth body hash verification has failed.")

    def _classify_oauth_failure(self, request) -> Rejected:
        """Name the reason SignatureOnlyEndpoint said no; it only returns False."""
        log_ = request.validator_log if request is not None else {}
        if log_.get("replayed_nonce"):
            return Rejected("replayed_nonce", "OAuth verification error: nonce has already been used.")
        if "signature" not in log_:
            # oauthlib stopped before checking the signature: a protocol parameter
            # is missing or malformed, or the timestamp is outside the window.
            timestamp = getattr(request, "timestamp", None) or ""
            if timestamp.isdigit() and abs(time.time() - int(timestamp)) > self.config.timestamp_window:
                return Rejected("stale_timestamp",
                                "OAuth verification error: timestamp is outside the "
                                f"{self.config.timestamp_window} s window.")
            return Rejected("bad_oauth_params",
                            "OAuth verification error: missing or invalid OAuth parameters "
                            "(HMAC-SHA1, oauth_version 1.0, 10-digit timestamp required).")
        if not log_.get("client"):
            return Rejected("unknown_consumer_key", "OAuth verification error: unknown consumer key.")
        # edX's exact wording for a wrong signature.
        return Rejected("bad_signature", "OAuth verification error: OAuth signature verification has failed.")

    def render(self, code_major: str, description: str, message_id: str | None, body_xml: str) -> str:
        description = escape(description)
        if self.config.style == "ims":
            return _IMS_TEMPLATE.format(
                own_id=self.state.next_response_id(),
                code_major=code_major,
                description=description,
                message_ref=escape(message_id or ""),
                body=body_xml,
            )
        return _EDX_TEMPLATE.format(
            message_id=escape(message_id if message_id is not None else "unknown"),
            code_major=code_major,
            description=description,
            body=body_xml,
        )


# Reasons that come from OAuth verification: only these use auth_failure_status.
_OAUTH_REASONS = frozenset({
    "bad_oauth_params", "stale_timestamp", "replayed_nonce", "unknown_consumer_key",
    "bad_signature", "bad_body_hash",
})

# Layout of edX xblock-lti-consumer's templates/xml/outcome_service_response.xml
# as seen on the wire, including its whitespace-only imsx_messageRefIdentifier.
_EDX_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
    <imsx_POXHeader>
        <imsx_POXResponseHeaderInfo>
            <imsx_version>V1.0</imsx_version>
            <imsx_messageIdentifier>{message_id}</imsx_messageIdentifier>
            <imsx_statusInfo>
                <imsx_codeMajor>{code_major}</imsx_codeMajor>
                <imsx_severity>status</imsx_severity>
                <imsx_description>{description}</imsx_description>
                <imsx_messageRefIdentifier>
                </imsx_messageRefIdentifier>
            </imsx_statusInfo>
        </imsx_POXResponseHeaderInfo>
    </imsx_POXHeader>
    <imsx_POXBody>{body}</imsx_POXBody>
</imsx_POXEnvelopeResponse>
"""

# Layout of the replaceResultResponse example in the IMS LTI 1.1
# implementation guide, section 6.1.1.
_IMS_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
  <imsx_POXHeader>
    <imsx_POXResponseHeaderInfo>
      <imsx_version>V1.0</imsx_version>
      <imsx_messageIdentifier>{own_id}</imsx_messageIdentifier>
      <imsx_statusInfo>
        <imsx_codeMajor>{code_major}</imsx_codeMajor>
        <imsx_severity>status</imsx_severity>
        <imsx_description>{description}</imsx_description>
        <imsx_messageRefIdentifier>{message_ref}</imsx_messageRefIdentifier>
        <imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier>
      </imsx_statusInfo>
    </imsx_POXResponseHeaderInfo>
  </imsx_POXHeader>
  <imsx_POXBody>{body}</imsx_POXBody>
</imsx_POXEnvelopeResponse>
"""


def _q(name: str) -> str:
    return f"{{{IMS_NS}}}{name}"


def _message_id_or_none(body: bytes) -> str | None:
    """Best-effort message id, so even rejections can echo it as edX does."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    node = root.find(f"{_q('imsx_POXHeader')}/{_q('imsx_POXRequestHeaderInfo')}/{_q('imsx_messageIdentifier')}")
    return (node.text or "") if node is not None else None


def _parse_replace_result(body: bytes) -> dict:
    """Extract the fields of a replaceResultRequest; elements must be in IMS_NS."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as err:
        raise Rejected("bad_xml", f"Request body XML parsing error: {err}") from err
    if root.tag != _q("imsx_POXEnvelopeRequest"):
        raise Rejected("bad_xml", "Request body XML parsing error: root element must be "
                                  f"imsx_POXEnvelopeRequest in namespace {IMS_NS}, got {root.tag}")

    def text(path: str, what: str) -> str:
        # Returned unstripped, as edX reads it: stray whitespace in a sourcedId
        # would make edX look up the wrong user, so tests must see it.
        node = root.find("/".join(_q(part) for part in path.split("/")))
        if node is None or not (node.text or "").strip():
            raise Rejected("bad_xml", f"Request body XML parsing error: missing {what}")
        return node.text

    message_id = text("imsx_POXHeader/imsx_POXRequestHeaderInfo/imsx_messageIdentifier",
                      "imsx_messageIdentifier")
    pox_body = root.find(_q("imsx_POXBody"))
    operation = pox_body[0].tag if pox_body is not None and len(pox_body) else None
    if operation != _q("replaceResultRequest"):
        # edX's answer to readResult/deleteResult and anything else.
        raise Rejected("unsupported_operation", "Target does not support the requested operation.",
                       code_major="unsupported")
    record = "imsx_POXBody/replaceResultRequest/resultRecord"
    return {
        "messageId": message_id,
        "sourcedId": text(f"{record}/sourcedGUID/sourcedId", "sourcedId"),
        "language": text(f"{record}/result/resultScore/language", "resultScore/language"),
        "textString": text(f"{record}/result/resultScore/textString", "resultScore/textString"),
    }


def _parse_score(text_string: str) -> Decimal:
    if not DECIMAL_RE.match(text_string):
        raise Rejected("bad_score", f"Request body XML parsing error: score {text_string!r} is not a decimal")
    score = Decimal(text_string)
    if not Decimal(0) <= score <= Decimal(1):
        # edX's wording.
        raise Rejected("bad_score", "Request body XML parsing error: "
                                    "score value outside the permitted range of 0.0-1.0")
    return score


_FAULT_HTML_500 = b"<html><head><title>500 Internal Server Error</title></head>" \
                  b"<body><h1>Internal Server Error</h1></body></html>\n"
# An HTML page that is not well-formed XML, like an SSO login page served with 200.
_FAULT_UNPARSEABLE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>" \
                     b"<body><p>Your session has expired.<br></body></html>\n"


class _Handler(BaseHTTPRequestHandler):
    server: "StandinServer"
    # Keep-alive like a production LMS; every response sets Content-Length.
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server naming)
        lists = {"/_control/grades": "grades", "/_control/rejected": "rejected",
                 "/_control/requests": "requests"}
        if self.path in lists:
            self._send_json(200, self.server.state.snapshot(lists[self.path]))
        else:
            self._send(404, "text/plain", b"not found\n")

    def do_POST(self):  # noqa: N802
        body = self._read_body()
        if body is None:
            return
        if not self.path.startswith("/_control/"):
            # Any other path is an outcome service URL: /outcomes/... in tests, or the
            # edX-shaped /courses/.../outcome_service_handler the gateway builds from course config.
            self._outcome(body)
        elif self.path == "/_control/mode":
            self._set_mode(body)
        elif self.path == "/_control/reset":
            self.server.state.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send(404, "text/plain", b"not found\n")

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            # Chunked uploads are not supported; clients here always know the length.
            self._send(411, "text/plain", b"Content-Length required\n")
            return None
        return self.rfile.read(int(length))

    def _outcome(self, body: bytes) -> None:
        state = self.server.state
        mode = state.take_mode()
        state.record("requests", {"path": self.path, "mode": mode,
                                  "messageId": _message_id_or_none(body), "receivedAt": _now_iso()})
        if mode != "ok":
            self._fault(mode, body)
            return
        # The signature covers scheme, host and port as the client addressed us.
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, xml = self.server.outcomes.handle(f"http://{host}{self.path}", headers, body)
        self._send(status, "application/xml; charset=UTF-8", xml.encode("utf-8"))

    def _fault(self, mode: str, body: bytes) -> None:
        log.info("injecting fault %s", mode)
        # The request reached the LMS, so its nonce counts as used: a client that
        # retries by resending the same signed request must be caught as a replay.
        self._consume_nonce()
        if mode == "http_500":
            self._send(500, "text/html", _FAULT_HTML_500)
        elif mode == "failure":
            xml = self.server.outcomes.render("failure", "The request has failed.",
                                              _message_id_or_none(body), "")
            self._send(200, "application/xml; charset=UTF-8", xml.encode("utf-8"))
        elif mode == "unparseable":
            self._send(200, "text/html; charset=UTF-8", _FAULT_UNPARSEABLE)
        else:  # hang: say nothing until the client gives up, then drop the connection.
            self.server.state.hang_release.wait(HANG_SECONDS)
            self.close_connection = True

    def _consume_nonce(self) -> None:
        try:
            params = dict(oauth_utils.parse_authorization_header(self.headers.get("Authorization", "")))
        except ValueError:
            return
        key, ts, nonce = (oauth_utils.unescape(params.get(name, ""))
                          for name in ("oauth_consumer_key", "oauth_timestamp", "oauth_nonce"))
        if nonce:
            self.server.state.remember_nonce(key, ts, nonce)

    def _set_mode(self, body: bytes) -> None:
        try:
            request = json.loads(body)
            mode = request["mode"]
            count = request.get("count", 1)
            if mode not in ("ok", *FAULT_MODES) or not isinstance(count, int) or count < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._send_json(400, {"error": 'expected {"mode": "ok"|"http_500"|"hang"|"failure"|'
                                           '"unparseable", "count": N}'})
            return
        self.server.state.set_mode(mode, 0 if mode == "ok" else count)
        self._send_json(200, {"mode": mode, "count": count})

    def _send_json(self, status: int, value) -> None:
        self._send(status, "application/json", json.dumps(value).encode("utf-8"))

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 (signature fixed by http.server)
        log.debug("%s %s", self.address_string(), format % args)


class StandinServer(ThreadingHTTPServer):
    """The HTTP server; `state` and `outcomes` are what tests reach in-process."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        self.state = State()
        self.outcomes = OutcomeService(config, self.state)
        super().__init__(address, _Handler)

    def server_close(self) -> None:
        self.state.hang_release.set()
        super().server_close()


def sign_launch(url: str, key: str, secret: str, params: list[tuple[str, str]],
                timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
    """Form fields of an LTI 1.1 basic launch POST, signed by oauthlib (HMAC-SHA1)."""
    fields = {"lti_message_type": "basic-lti-launch-request", "lti_version": "LTI-1p0"}
    fields.update(params)
    client = Client(key, client_secret=secret, signature_method=SIGNATURE_HMAC_SHA1,
                    signature_type=SIGNATURE_TYPE_BODY, callback_uri="about:blank",
                    timestamp=timestamp, nonce=nonce)
    _, _, body = client.sign(url, http_method="POST", body=list(fields.items()),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    return dict(parse_qsl(body, keep_blank_values=True))


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name, value


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="LTI 1.1 Basic Outcomes stand-in LMS")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", required=True, help="OAuth consumer key")
    parser.add_argument("--secret", required=True, help="OAuth consumer secret")
    parser.add_argument("--timestamp-window", type=int, default=300, metavar="SECONDS")
    parser.add_argument("--style", choices=("edx", "ims"), default="edx",
                        help="response envelope layout (default: edx)")
    parser.add_argument("--auth-failure-status", type=int, choices=(200, 401), default=200,
                        help="HTTP status for OAuth failures (edX: 200)")
    parser.add_argument("--verbose", action="store_true", help="also log every HTTP request")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="lms-standin %(levelname)s %(message)s")
    # oauthlib logs every failed verification at INFO; at DEBUG (--verbose) it
    # also logs the signature base string it computed, which is what one needs
    # to debug a client signer.
    logging.getLogger("oauthlib").setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    config = Config(args.key, args.secret, args.timestamp_window, args.style, args.auth_failure_status)
    server = StandinServer((args.host, args.port), config)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _sign_launch_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lms_standin.py sign-launch",
                                     description="Print the signed form fields of an LTI 1.1 launch as JSON")
    parser.add_argument("--url", required=True, help="the tool's launch URL")
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--param", type=_name_value, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--timestamp", help="force oauth_timestamp (stale-launch tests)")
    parser.add_argument("--nonce", help="force oauth_nonce (replay tests)")
    args = parser.parse_args(argv)
    fields = sign_launch(args.url, args.key, args.secret, args.param, args.timestamp, args.nonce)
    print(json.dumps(fields), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["sign-launch"]:
        return _sign_launch_cli(argv[1:])
    return _serve(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
