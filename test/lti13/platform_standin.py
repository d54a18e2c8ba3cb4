#!/usr/bin/env python3
"""A stand-in LTI 1.3 platform (LMS) for testing a tool's LTI Advantage code.

It plays the platform side of:
- LTI Core 1.3 resource link launches, through the OpenID Connect
  third-party-initiated login of the IMS Security Framework 1.0
  (`/auth` answers with an auto-submitting form carrying a signed id_token);
- the OAuth 2.0 client_credentials grant with a JWT client assertion
  (RFC 7523) that the tool signs with its own key and publishes in a JWKS;
- the AGS 2.0 Score publish service (`POST <lineitem>/scores`).

Everything the tool sends is verified with PyJWT and the Python standard
library, so nothing is shared with the project's TypeScript code. Tests drive
and inspect the platform through a JSON API under `/_control/`. See README.md
next to this file.

Usage:
    python platform_standin.py --port 0 [--host 127.0.0.1] [--token-ttl 3600] [--verbose]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import math
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger("lti13-platform")

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
LTI1P1_CLAIM = LTI + "lti1p1"
_AGS_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/"
SCOPE_LINEITEM = _AGS_SCOPE + "lineitem"
SCOPE_LINEITEM_READONLY = _AGS_SCOPE + "lineitem.readonly"
SCOPE_RESULT_READONLY = _AGS_SCOPE + "result.readonly"
SCOPE_SCORE = _AGS_SCOPE + "score"
# Every scope AGS 2.0 defines: what a tool may ask the token endpoint for.
AGS_SCOPES = (SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE)
# What the launch's AGS claim offers (a platform granting full line item management).
LAUNCH_AGS_SCOPES = [SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE]
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
SCORE_MEDIA_TYPE = "application/vnd.ims.lis.v1.score+json"
ACTIVITY_PROGRESS = ("Initialized", "Started", "InProgress", "Submitted", "Completed")
GRADING_PROGRESS = ("FullyGraded", "Pending", "PendingManual", "Failed", "NotReady")
# AGS: "ISO 8601 ... with sub-second precision ... must include the time zone".
# "Z" is accepted as the UTC offset, as Open edX's and Canvas's parsers do.
TIMESTAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.(\d+)(Z|[+-]\d{2}:\d{2})$")
ID_TOKEN_LIFETIME = 300
# How far in the future a client assertion's iat may be (clock skew).
IAT_SKEW = 60
# How long a "hang" holds the connection without answering; /_control/reset releases it early.
HANG_SECONDS = 120
JWKS_FETCH_TIMEOUT = 5
SIGN_WITH = ("current", "previous", "unknown")
FAULT_ENDPOINTS = ("scores", "token")
FAULT_MODES = ("http_500", "http_503", "hang")
# Canvas's answer when the score's user is not a student of the course
# (Lti::Ims::ScoresController#verify_user_in_context), status 422.
CANVAS_NOT_STUDENT = "User not found in course or is not a student"
# Open edX's answers when a score's timestamp is not newer than the stored one
# (xblock-lti-consumer, LtiAgsScoreSerializer.validate_timestamp), status 400.
EDX_OLDER_TIMESTAMP = "Score timestamp can only be updated to a later point in time"
EDX_SAME_TIMESTAMP = "Score already exists for the provided timestamp"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _merge(target: dict, overrides: dict | None) -> dict:
    """Shallow merge where a None value removes the key (how tests drop a claim)."""
    for name, value in (overrides or {}).items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return target


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def lti1p1_consumer_key_sign(consumer_key: str, secret: str, deployment_id: str, iss: str,
                             client_id: str, exp: int, nonce: str) -> str:
    """oauth_consumer_key_sign of the LTI 1.1 migration claim (LTI 1.3 Core, appendix
    "LTI 1.1 migration claim"): base64(HMAC-SHA256(secret, key&deployment&iss&aud&exp&nonce))."""
    base = "&".join([consumer_key, deployment_id, iss, client_id, str(exp), nonce])
    return base64.b64encode(hmac.new(secret.encode(), base.encode(), hashlib.sha256).digest()).decode()


class SigningKey:
    """An RSA key of the platform. Signing is done by hand rather than with PyJWT
    so header_overrides can put anything in the header (a wrong kid, alg "none")."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_jwk(self) -> dict:
        numbers = self.private_key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e),
                "kid": self.kid, "alg": "RS256", "use": "sig"}

    def sign(self, claims: dict, header_overrides: dict | None = None, kid: str | None = None) -> str:
        header = _merge({"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}, header_overrides)
        segments = [_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)]
        signing_input = ".".join(segments).encode("ascii")
        # An "alg: none" header gets the empty signature such a token would carry.
        signature = b"" if header.get("alg") == "none" else \
            self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


class ApiError(Exception):
    """A refusal by a platform endpoint; recorded in /_control/rejected."""

    def __init__(self, status: int, error: str, description: str, body=None, headers=None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.body = body if body is not None else {"error": error, "error_description": description}
        self.headers = headers or {}


class ControlError(Exception):
    """A malformed /_control/ request (a bug in the test, not in the tool)."""


# --- small validators for control requests -------------------------------------------------

def _check_fields(req: dict, allowed: set[str]) -> None:
    # Unknown fields are refused so a typo in a test does not silently change nothing.
    unknown = sorted(set(req) - allowed)
    if unknown:
        raise ControlError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _str(req: dict, name: str, required: bool = False) -> str | None:
    value = req.get(name)
    if value is None:
        if required:
            raise ControlError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(f"{name} must be a non-empty string")
    return value


def _dict(req: dict, name: str) -> dict | None:
    value = req.get(name)
    if value is not None and not isinstance(value, dict):
        raise ControlError(f"{name} must be an object")
    return value


def _str_list(req: dict, name: str) -> list[str] | None:
    value = req.get(name)
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise ControlError(f"{name} must be a list of strings")
    return value


def _int(req: dict, name: str, default: int | None = None, minimum: int | None = None) -> int | None:
    value = req.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ControlError(f"{name} must be an integer" + (f" >= {minimum}" if minimum is not None else ""))
    return value


def _is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


# --- score body -----------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _timestamp_value(text: str) -> Decimal:
    """Exact seconds since the epoch, so sub-microsecond digits still order correctly."""
    match = TIMESTAMP_RE.match(text)
    if not match:
        raise ValueError("timestamp must be ISO 8601 with fractional seconds and a UTC offset, "
                         "e.g. 2024-05-01T12:00:00.123+00:00")
    local = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    offset = 0
    if match[3] != "Z":
        hours, minutes = int(match[3][1:3]), int(match[3][4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("timestamp has an invalid UTC offset")
        offset = (hours * 3600 + minutes * 60) * (1 if match[3][0] == "+" else -1)
    return Decimal(int(local.timestamp()) - offset) + Decimal("0." + match[2])


def _number(data: dict, name: str, minimum: float, exclusive: bool) -> float:
    value = data.get(name)
    # bool is an int in Python but not a JSON number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is required and must be a number")
    if value < minimum or (exclusive and value == minimum):
        raise ValueError(f"{name} must be {'>' if exclusive else '>='} {minimum:g}")
    return value


def parse_score(body: bytes) -> tuple[dict, Decimal]:
    """Validate an AGS Score; returns (the body as sent, its timestamp as a number)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    if not isinstance(data.get("userId"), str) or not data["userId"]:
        raise ValueError("userId is required and must be a non-empty string")
    # AGS lets scoreGiven be left out; a grade-posting tool always sends it, so it is required here.
    _number(data, "scoreGiven", 0, exclusive=False)
    _number(data, "scoreMaximum", 0, exclusive=True)
    if data.get("activityProgress") not in ACTIVITY_PROGRESS:
        raise ValueError(f"activityProgress must be one of {', '.join(ACTIVITY_PROGRESS)}")
    if data.get("gradingProgress") not in GRADING_PROGRESS:
        raise ValueError(f"gradingProgress must be one of {', '.join(GRADING_PROGRESS)}")
    if not isinstance(data.get("timestamp"), str):
        raise ValueError("timestamp is required and must be a string")
    timestamp = _timestamp_value(data["timestamp"])
    if data.get("comment") is not None and not isinstance(data["comment"], str):
        raise ValueError("comment must be a string")
    return data, timestamp


# --- the platform ---------------------------------------------------------------------------

_LAUNCH_FIELDS = {
    "client_id", "sub", "login_hint", "lineitem", "lineitems", "resource_link_id", "resource_link_title",
    "context_id", "context_label", "context_title", "custom", "roles", "target_link_uri",
    "lti1p1_user_id", "lti1p1_oauth_consumer_key", "lti1p1_oauth_consumer_secret",
    "lti1p1_oauth_consumer_key_sign", "name", "given_name", "family_name", "email",
    "overrides", "header_overrides", "sign_with", "exp_in", "audience", "deployment_id", "nonce_override",
}
_TOOL_FIELDS = {"client_id", "deployment_id", "jwks_url", "redirect_uris", "login_url"}


class Platform:
    """All state and behaviour, independent of HTTP; shared by handler threads."""

    def __init__(self, issuer: str, token_ttl: int = 3600) -> None:
        self.issuer = issuer
        self.token_ttl = token_ttl
        self._lock = threading.Lock()
        self._key_serial = 1
        self.current_key = SigningKey("platform-1")
        self.previous_key: SigningKey | None = None
        self.publish_previous = False
        self._unknown_key: SigningKey | None = None
        self.tools: dict[str, dict] = {}
        self.launches: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.hang_release = threading.Event()
        # No proxies: a loopback JWKS fetch must never be sent through an HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.reset()

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    def endpoints(self) -> dict:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": self.token_url, "jwks_uri": f"{self.issuer}/jwks"}

    def reset(self) -> None:
        with self._lock:
            self.scores: list[dict] = []
            self.rejected: list[dict] = []
            self.token_requests: list[dict] = []
            self.requests: list[dict] = []
            self._used_jtis: set[tuple[str, str]] = set()
            self._last_timestamps: dict[tuple[str, str], Decimal] = {}
            self._faults: dict[str, list] = {}
            self.not_students: set[str] = set()
            # Wake handlers stuck in "hang" and arm a fresh event for later ones.
            self.hang_release.set()
            self.hang_release = threading.Event()

    def record(self, kind: str, entry: dict) -> None:
        with self._lock:
            getattr(self, kind).append(entry)

    def snapshot(self, kind: str) -> list[dict]:
        with self._lock:
            return json.loads(json.dumps(getattr(self, kind)))  # deep copy

    # --- keys ---

    def jwks(self) -> dict:
        with self._lock:
            keys = [self.current_key.public_jwk()]
            if self.publish_previous and self.previous_key is not None:
                keys.append(self.previous_key.public_jwk())
        return {"keys": keys}

    def rotate(self, keep_old: bool) -> str:
        new_key = SigningKey("pending")  # generated outside the lock: it takes a moment
        with self._lock:
            self._key_serial += 1
            new_key.kid = f"platform-{self._key_serial}"
            self.previous_key, self.current_key = self.current_key, new_key
            # Only the key just replaced stays published: platforms overlap one rotation.
            self.publish_previous = keep_old
        log.info("rotated to %s (previous %s)", new_key.kid,
                 "still published" if keep_old else "withdrawn")
        return new_key.kid

    def signing_key(self, which: str) -> SigningKey:
        with self._lock:
            if which == "current":
                return self.current_key
            if which == "previous":
                if self.previous_key is None:
                    raise ControlError('sign_with "previous" needs a /_control/rotate first')
                return self.previous_key
            if self._unknown_key is None:
                # Never published in /jwks: tokens it signs cannot be verified.
                self._unknown_key = SigningKey("unknown-kid")
            return self._unknown_key

    # --- control API ---

    def register_tool(self, req: dict) -> dict:
        _check_fields(req, _TOOL_FIELDS)
        tool = {
            "client_id": _str(req, "client_id", required=True),
            "deployment_id": _str(req, "deployment_id", required=True),
            "jwks_url": _str(req, "jwks_url", required=True),
            "redirect_uris": _str_list(req, "redirect_uris"),
            "login_url": _str(req, "login_url"),
        }
        if not tool["redirect_uris"]:
            raise ControlError("redirect_uris must be a non-empty list of strings")
        if not _is_loopback_url(tool["jwks_url"]):
            # This stand-in only ever talks to the machine it runs on.
            raise ControlError("jwks_url must be an http(s) URL on a loopback address")
        with self._lock:
            self.tools[tool["client_id"]] = tool
        log.info("registered tool %s", tool["client_id"])
        return {"ok": True, **self.endpoints()}

    def prepare_launch(self, req: dict) -> dict:
        _check_fields(req, _LAUNCH_FIELDS)
        client_id = _str(req, "client_id", required=True)
        with self._lock:
            tool = self.tools.get(client_id)
        if tool is None:
            raise ControlError(f"client_id {client_id!r} is not registered (POST /_control/tool first)")
        sub = _str(req, "sub", required=True)
        resource_link_id = _str(req, "resource_link_id", required=True)
        context_id = _str(req, "context_id") or "context-1"
        launch = {
            "client_id": client_id,
            "sub": sub,
            # The login hint is opaque to the tool; the user's id is what Moodle sends.
            "login_hint": _str(req, "login_hint") or sub,
            "deployment_id": _str(req, "deployment_id") or tool["deployment_id"],
            "target_link_uri": _str(req, "target_link_uri") or tool["redirect_uris"][0],
            "resource_link": {"id": resource_link_id,
                              "title": _str(req, "resource_link_title") or f"Resource {resource_link_id}"},
            "context": {"id": context_id, "label": _str(req, "context_label") or context_id,
                        "title": _str(req, "context_title") or f"Course {context_id}"},
            "roles": _str_list(req, "roles") if "roles" in req else [LEARNER],
            "custom": _dict(req, "custom"),
            "overrides": _dict(req, "overrides"),
            "header_overrides": _dict(req, "header_overrides"),
            "sign_with": req.get("sign_with", "current"),
            "exp_in": _int(req, "exp_in", default=ID_TOKEN_LIFETIME),
            "nonce_override": _str(req, "nonce_override"),
            "person": {name: _str(req, name) for name in ("name", "given_name", "family_name", "email")
                       if req.get(name) is not None},
        }
        if launch["roles"] is None:
            raise ControlError("roles must be a list of strings")
        if launch["sign_with"] not in SIGN_WITH:
            raise ControlError(f"sign_with must be one of {SIGN_WITH}")
        if launch["sign_with"] == "previous":
            self.signing_key("previous")  # fail now rather than at /auth
        audience = req.get("audience")
        if audience is not None and not isinstance(audience, str) and _str_list(req, "audience") is None:
            raise ControlError("audience must be a string or a list of strings")
        launch["audience"] = audience
        # A missing lineitem gets a default URL; an explicit null leaves it out of the claim
        # (a link with no gradebook column).
        default_lineitem = f"{self.issuer}/lineitems/{quote(resource_link_id, safe='')}/lineitem"
        default_lineitems = f"{self.issuer}/contexts/{quote(context_id, safe='')}/lineitems"
        for name, default in (("lineitem", default_lineitem), ("lineitems", default_lineitems)):
            launch[name] = _str(req, name) if name in req else default
        if req.get("lti1p1_user_id") is not None:
            launch["lti1p1"] = {
                "user_id": _str(req, "lti1p1_user_id"),
                "oauth_consumer_key": _str(req, "lti1p1_oauth_consumer_key") or "lti11-consumer-key",
                "secret": _str(req, "lti1p1_oauth_consumer_secret"),
                "sign": _str(req, "lti1p1_oauth_consumer_key_sign"),
            }
        hint = secrets.token_urlsafe(18)
        with self._lock:
            self.launches[hint] = launch
        return {"lti_message_hint": hint, "login_hint": launch["login_hint"], "iss": self.issuer,
                "client_id": client_id, "lti_deployment_id": launch["deployment_id"],
                "target_link_uri": launch["target_link_uri"]}

    def sign_claims(self, req: dict) -> dict:
        _check_fields(req, {"claims", "kid", "sign_with", "header_overrides"})
        claims = _dict(req, "claims")
        if claims is None:
            raise ControlError("claims (an object) is required")
        sign_with = req.get("sign_with", "current")
        if sign_with not in SIGN_WITH:
            raise ControlError(f"sign_with must be one of {SIGN_WITH}")
        key = self.signing_key(sign_with)
        return {"id_token": key.sign(claims, _dict(req, "header_overrides"), kid=_str(req, "kid"))}

    def set_fault(self, req: dict) -> dict:
        _check_fields(req, {"endpoint", "mode", "count", "retry_after"})
        endpoint, mode = req.get("endpoint"), req.get("mode")
        if endpoint not in FAULT_ENDPOINTS or mode not in FAULT_MODES:
            raise ControlError(f"endpoint must be one of {FAULT_ENDPOINTS}, mode one of {FAULT_MODES}")
        count = _int(req, "count", default=1, minimum=0)
        retry_after = _int(req, "retry_after", minimum=0)
        with self._lock:
            self._faults[endpoint] = [mode, count, retry_after]
        return {"endpoint": endpoint, "mode": mode, "count": count}

    def take_fault(self, endpoint: str) -> tuple[str, int | None] | None:
        with self._lock:
            fault = self._faults.get(endpoint)
            if not fault or fault[1] <= 0:
                return None
            fault[1] -= 1
            return fault[0], fault[2]

    def expire_tokens(self) -> int:
        with self._lock:
            for entry in self.tokens.values():
                entry["expires_at"] = 0.0
            return len(self.tokens)

    def mark_not_student(self, req: dict) -> dict:
        _check_fields(req, {"userId"})
        user_id = _str(req, "userId", required=True)
        with self._lock:
            self.not_students.add(user_id)
        return {"ok": True}

    # --- OIDC authorization endpoint ---

    def authorize(self, params: dict[str, str]) -> tuple[str, str, str]:
        """Check an OIDC authentication request; returns (redirect_uri, id_token, state)."""

        def need(name: str) -> str:
            value = params.get(name)
            if not value:
                raise ApiError(400, "invalid_request", f"{name} is required")
            return value

        client_id = need("client_id")
        with self._lock:
            tool = self.tools.get(client_id)
        if tool is None:
            raise ApiError(400, "unauthorized_client", f"client_id {client_id!r} is not registered")
        redirect_uri = need("redirect_uri")
        if redirect_uri not in tool["redirect_uris"]:
            raise ApiError(400, "invalid_request",
                           f"redirect_uri {redirect_uri!r} is not registered for client {client_id!r}")
        if "openid" not in need("scope").split():
            raise ApiError(400, "invalid_scope", "scope must include openid")
        if need("response_type") != "id_token":
            raise ApiError(400, "unsupported_response_type", "response_type must be id_token")
        if need("response_mode") != "form_post":
            raise ApiError(400, "invalid_request", "response_mode must be form_post")
        if need("prompt") != "none":
            raise ApiError(400, "invalid_request", "prompt must be none")
        nonce = need("nonce")
        state = need("state")
        login_hint = need("login_hint")
        hint = need("lti_message_hint")
        with self._lock:
            launch = self.launches.get(hint)
        if launch is None:
            raise ApiError(400, "invalid_request", "lti_message_hint does not identify a launch")
        if launch["client_id"] != client_id:
            raise ApiError(400, "invalid_request",
                           f"lti_message_hint belongs to client {launch['client_id']!r}, not {client_id!r}")
        if login_hint != launch["login_hint"]:
            # The hinted user is not the one this launch is for: as if a different user were logged in.
            raise ApiError(400, "login_required", "login_hint does not match the launch's user")
        try:
            key = self.signing_key(launch["sign_with"])
        except ControlError as err:
            raise ApiError(400, "invalid_request", str(err)) from err
        claims = self.launch_claims(launch, launch["nonce_override"] or nonce)
        log.info("launch for %s (client %s) signed with %s", launch["sub"], client_id, key.kid)
        return redirect_uri, key.sign(claims, launch["header_overrides"]), state

    def launch_claims(self, launch: dict, nonce: str) -> dict:
        now = int(time.time())
        client_id = launch["client_id"]
        claims = {
            "iss": self.issuer,
            "aud": launch["audience"] if launch["audience"] is not None else client_id,
            "azp": client_id,
            "sub": launch["sub"],
            "exp": now + launch["exp_in"],
            "iat": now,
            "nonce": nonce,
            LTI + "message_type": "LtiResourceLinkRequest",
            LTI + "version": "1.3.0",
            LTI + "deployment_id": launch["deployment_id"],
            LTI + "target_link_uri": launch["target_link_uri"],
            LTI + "resource_link": dict(launch["resource_link"]),
            LTI + "roles": list(launch["roles"]),
            LTI + "context": dict(launch["context"]),
            **launch["person"],
        }
        if launch["custom"] is not None:
            claims[LTI + "custom"] = dict(launch["custom"])
        ags = {"scope": list(LAUNCH_AGS_SCOPES)}
        for name in ("lineitem", "lineitems"):
            if launch[name] is not None:
                ags[name] = launch[name]
        claims[AGS_CLAIM] = ags
        if "lti1p1" in launch:
            spec = launch["lti1p1"]
            claim = {"user_id": spec["user_id"], "oauth_consumer_key": spec["oauth_consumer_key"]}
            sign = spec["sign"]
            if sign is None and spec["secret"] is not None:
                sign = lti1p1_consumer_key_sign(spec["oauth_consumer_key"], spec["secret"],
                                                launch["deployment_id"], self.issuer, client_id,
                                                claims["exp"], nonce)
            if sign is not None:
                claim["oauth_consumer_key_sign"] = sign
            claims[LTI1P1_CLAIM] = claim
        # Last, so a test can replace or (with null) remove any claim above.
        return _merge(claims, launch["overrides"])

    # --- token endpoint ---

    def issue_token(self, content_type: str | None, body: bytes, info: dict) -> dict:
        """client_credentials grant with a JWT client assertion. `info` collects what
        /_control/token-requests reports, even when the request is refused."""
        if _media_type(content_type) != FORM_MEDIA_TYPE:
            raise ApiError(400, "invalid_request", f"Content-Type must be {FORM_MEDIA_TYPE}")
        form = parse_form(body.decode("utf-8", "replace"))
        info["scope"] = form.get("scope")
        assertion = form.get("client_assertion")
        unverified = _peek_jwt(assertion)
        if unverified is not None:
            info["client_id"] = unverified[1].get("iss")
            info["jti"] = unverified[1].get("jti")

        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        # RFC 6749: a missing or unsupported client authentication method is invalid_client.
        if form.get("client_assertion_type") != JWT_BEARER:
            raise ApiError(401, "invalid_client", f"client_assertion_type must be {JWT_BEARER}")
        if not assertion:
            raise ApiError(401, "invalid_client", "client_assertion is required")
        if unverified is None:
            raise ApiError(401, "invalid_client", "client_assertion is not a JWT")
        header, payload = unverified
        client_id = payload.get("iss")
        with self._lock:
            tool = self.tools.get(client_id) if isinstance(client_id, str) else None
        if tool is None:
            raise ApiError(401, "invalid_client", f"client assertion iss {client_id!r} is not a registered client")
        if form.get("client_id") is not None and form["client_id"] != client_id:
            raise ApiError(401, "invalid_client", "client_id does not match the client assertion's iss")
        if header.get("alg") != "RS256":
            raise ApiError(401, "invalid_client", f"client assertion alg must be RS256, got {header.get('alg')!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ApiError(401, "invalid_client", "client assertion header has no kid")
        key = self._tool_key(tool, kid)
        try:
            claims = jwt.decode(
                assertion, key, algorithms=["RS256"], audience=[self.token_url, self.issuer],
                issuer=client_id, subject=client_id,
                # iat is checked below with the skew allowance; PyJWT would allow none.
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "verify_iat": False})
        except jwt.InvalidSignatureError as err:
            raise ApiError(401, "invalid_client", f"client assertion signature does not verify: {err}") from err
        except jwt.PyJWTError as err:
            raise ApiError(400, "invalid_grant", f"client assertion rejected: {err}") from err
        iat = claims["iat"]
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or iat > time.time() + IAT_SKEW:
            raise ApiError(400, "invalid_grant", f"client assertion iat must be a time at most {IAT_SKEW} s ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise ApiError(400, "invalid_grant", "client assertion jti must be a non-empty string")
        if not self.use_jti(client_id, jti):
            raise ApiError(400, "invalid_grant", "client assertion jti has already been used")

        requested = list(dict.fromkeys((form.get("scope") or "").split()))
        if not requested:
            raise ApiError(400, "invalid_scope", "scope is required")
        extra = [scope for scope in requested if scope not in AGS_SCOPES]
        if extra:
            raise ApiError(400, "invalid_scope", f"scope(s) not available: {' '.join(extra)}")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = {"client_id": client_id, "scopes": set(requested),
                                  "expires_at": time.time() + self.token_ttl}
        log.info("issued access token to %s for %s", client_id, " ".join(requested))
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl,
                "scope": " ".join(requested)}

    def use_jti(self, client_id: str, jti: str) -> bool:
        """Remember a client assertion's jti; False if it was seen before."""
        with self._lock:
            if (client_id, jti) in self._used_jtis:
                return False
            self._used_jtis.add((client_id, jti))
            return True

    def _tool_key(self, tool: dict, kid: str):
        # Fetched on every request (no cache), and once more when the kid is missing, the
        # way a caching platform refetches after the tool rotates its key.
        for attempt in (1, 2):
            for jwk in self._fetch_jwks(tool["jwks_url"]):
                if isinstance(jwk, dict) and jwk.get("kid") == kid:
                    if jwk.get("kty") != "RSA" or jwk.get("alg", "RS256") != "RS256":
                        raise ApiError(401, "invalid_client", f"tool key {kid!r} is not an RS256 RSA key")
                    try:
                        return RSAAlgorithm.from_jwk(jwk)
                    except (jwt.PyJWTError, ValueError, KeyError) as err:
                        raise ApiError(401, "invalid_client", f"tool key {kid!r} is malformed: {err}") from err
            if attempt == 1:
                log.info("kid %r not in %s; fetching it again", kid, tool["jwks_url"])
        raise ApiError(401, "invalid_client", f"no key with kid {kid!r} in the tool's JWKS")

    def _fetch_jwks(self, url: str) -> list:
        try:
            with self._opener.open(url, timeout=JWKS_FETCH_TIMEOUT) as resp:
                keys = json.loads(resp.read()).get("keys")
        except (urllib.error.URLError, OSError, ValueError, AttributeError) as err:
            raise ApiError(401, "invalid_client", f"could not fetch the tool's JWKS from {url}: {err}") from err
        if not isinstance(keys, list):
            raise ApiError(401, "invalid_client", f"the tool's JWKS at {url} has no keys list")
        return keys

    # --- AGS score service ---

    def post_score(self, path: str, query: str, headers, body: bytes) -> None:
        token = self._check_bearer(headers.get("Authorization"))
        content_type = headers.get("Content-Type")
        if _media_type(content_type) != SCORE_MEDIA_TYPE:
            raise ApiError(415, "unsupported_media_type",
                           f"Content-Type must be {SCORE_MEDIA_TYPE}, got {content_type!r}")
        try:
            score, timestamp = parse_score(body)
        except ValueError as err:
            raise ApiError(400, "invalid_score", str(err)) from err
        # The score URL is the line item URL with /scores appended to its path; the query stays.
        lineitem = self.issuer + path[:-len("/scores")] + (f"?{query}" if query else "")
        user_id = score["userId"]
        with self._lock:
            if user_id in self.not_students:
                raise ApiError(422, "not_a_student", CANVAS_NOT_STUDENT, body={
                    "errors": {"type": "unprocessable_entity", "message": CANVAS_NOT_STUDENT}})
            last = self._last_timestamps.get((lineitem, user_id))
            if last is not None and timestamp <= last:
                message = EDX_SAME_TIMESTAMP if timestamp == last else EDX_OLDER_TIMESTAMP
                raise ApiError(400, "stale_timestamp", message, body={"timestamp": [message]})
            self._last_timestamps[(lineitem, user_id)] = timestamp
            self.scores.append({
                "lineitem": lineitem,
                "userId": user_id,
                "scoreGiven": score["scoreGiven"],
                "scoreMaximum": score["scoreMaximum"],
                "activityProgress": score["activityProgress"],
                "gradingProgress": score["gradingProgress"],
                "timestamp": score["timestamp"],
                "comment": score.get("comment"),
                "client_id": token["client_id"],
                "receivedAt": _now_iso(),
                "body": score,
            })
        log.info("score %s/%s for %s on %s", score["scoreGiven"], score["scoreMaximum"], user_id, lineitem)

    def _check_bearer(self, authorization: str | None) -> dict:
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()

        def refuse(error: str, description: str) -> ApiError:
            return ApiError(401, error, description, headers={
                "WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'})

        if scheme.lower() != "bearer" or not value:
            raise refuse("invalid_token", "Authorization: Bearer <access token> is required")
        with self._lock:
            entry = self.tokens.get(value)
        if entry is None:
            raise refuse("invalid_token", "unknown access token")
        if entry["expires_at"] <= time.time():
            raise refuse("invalid_token", "access token has expired")
        if SCOPE_SCORE not in entry["scopes"]:
            raise refuse("insufficient_scope", f"access token lacks the {SCOPE_SCORE} scope")
        return entry


def parse_form(text: str) -> dict[str, str]:
    """application/x-www-form-urlencoded; a repeated parameter is an error (RFC 6749 3.1/3.2)."""
    form: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name in form:
            raise ApiError(400, "invalid_request", f"parameter {name} is repeated")
        form[name] = value
    return form


def _peek_jwt(token: str | None) -> tuple[dict, dict] | None:
    """(header, claims) without any verification, or None if it is not a JWT."""
    if not token:
        return None
    try:
        return (jwt.get_unverified_header(token),
                jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        return None


_FORM_POST_PAGE = """<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>LTI launch</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="{action}">
<input type="hidden" name="id_token" value="{id_token}">
<input type="hidden" name="state" value="{state}">
<noscript><button type="submit">Continue</button></noscript>
</form>
</body>
</html>
"""

_FAULT_PAGES = {
    500: b"<html><head><title>500 Internal Server Error</title></head>"
         b"<body><h1>Internal Server Error</h1></body></html>\n",
    503: b"<html><head><title>503 Service Unavailable</title></head>"
         b"<body><h1>Service Unavailable</h1></body></html>\n",
}


class _Handler(BaseHTTPRequestHandler):
    server: "PlatformServer"
    # Keep-alive like a production LMS; every response sets Content-Length.
    protocol_version = "HTTP/1.1"

    @property
    def platform(self) -> Platform:
        return self.server.platform

    def do_GET(self):  # noqa: N802 (http.server naming)
        path, _, query = self.path.partition("?")
        lists = {"/_control/scores": "scores", "/_control/rejected": "rejected",
                 "/_control/token-requests": "token_requests", "/_control/requests": "requests"}
        if path == "/jwks":
            self._send_json(200, self.platform.jwks())
        elif path == "/.well-known/openid-configuration":
            self._send_json(200, self.platform.endpoints())
        elif path == "/auth":
            self._auth(query)
        elif path in lists:
            self._send_json(200, self.platform.snapshot(lists[path]))
        else:
            self._send(404, "text/plain", b"not found\n")

    def do_POST(self):  # noqa: N802
        body = self._read_body()
        if body is None:
            return
        path, _, query = self.path.partition("?")
        if path == "/auth":
            if _media_type(self.headers.get("Content-Type")) != FORM_MEDIA_TYPE:
                self._refuse("auth", ApiError(400, "invalid_request", f"Content-Type must be {FORM_MEDIA_TYPE}"))
            else:
                self._auth(body.decode("utf-8", "replace"))
        elif path == "/token":
            self._token(body)
        elif path.startswith("/lineitems/") and path.endswith("/scores") and len(path) > len("/lineitems//scores"):
            self._score(path, query, body)
        elif path.startswith("/_control/"):
            self._control(path, body)
        else:
            self._send(404, "text/plain", b"not found\n")

    # --- platform endpoints ---

    def _auth(self, params_text: str) -> None:
        try:
            redirect_uri, id_token, state = self.platform.authorize(parse_form(params_text))
        except ApiError as err:
            self._refuse("auth", err)
            return
        page = _FORM_POST_PAGE.format(action=html.escape(redirect_uri, quote=True),
                                      id_token=html.escape(id_token, quote=True),
                                      state=html.escape(state, quote=True))
        self._log_request("auth", None, 200)
        self._send(200, "text/html; charset=utf-8", page.encode("utf-8"), {"Cache-Control": "no-store"})

    def _token(self, body: bytes) -> None:
        info = {"client_id": None, "scope": None, "jti": None}
        fault = self.platform.take_fault("token")
        if fault is not None:
            try:
                form = parse_form(body.decode("utf-8", "replace"))
            except ApiError:
                form = {}
            peeked = _peek_jwt(form.get("client_assertion"))
            if peeked is not None and isinstance(peeked[1].get("iss"), str) and isinstance(peeked[1].get("jti"), str):
                # The assertion reached the platform, so its jti counts as used: a client
                # retrying with the same assertion must be caught as a replay.
                self.platform.use_jti(peeked[1]["iss"], peeked[1]["jti"])
                info.update(client_id=peeked[1]["iss"], jti=peeked[1]["jti"])
            info["scope"] = form.get("scope")
            self.platform.record("token_requests", {**info, "ok": False, "fault": fault[0]})
            self._fault("token", *fault)
            return
        try:
            answer = self.platform.issue_token(self.headers.get("Content-Type"), body, info)
        except ApiError as err:
            self.platform.record("token_requests", {**info, "ok": False})
            self._refuse("token", err)
            return
        self.platform.record("token_requests", {**info, "ok": True})
        self._log_request("token", None, 200)
        self._send_json(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _score(self, path: str, query: str, body: bytes) -> None:
        fault = self.platform.take_fault("scores")
        if fault is not None:
            self._fault("scores", *fault)
            return
        try:
            self.platform.post_score(path, query, self.headers, body)
        except ApiError as err:
            self._refuse("scores", err)
            return
        self._log_request("scores", None, 200)
        self._send_json(200, {})

    def _refuse(self, endpoint: str, err: ApiError) -> None:
        self.platform.record("rejected", {"endpoint": endpoint, "status": err.status,
                                          "error": err.error, "description": err.description})
        log.info("rejected %s %d %s: %s", endpoint, err.status, err.error, err.description)
        self._log_request(endpoint, None, err.status)
        self._send_json(err.status, err.body, err.headers)

    def _fault(self, endpoint: str, mode: str, retry_after: int | None) -> None:
        log.info("injecting fault %s on %s", mode, endpoint)
        if mode == "hang":
            self._log_request(endpoint, mode, None)
            # Say nothing until the client gives up (or reset), then drop the connection.
            self.platform.hang_release.wait(HANG_SECONDS)
            self.close_connection = True
            return
        status = 500 if mode == "http_500" else 503
        self._log_request(endpoint, mode, status)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._send(status, "text/html; charset=utf-8", _FAULT_PAGES[status], headers)

    def _log_request(self, endpoint: str, fault: str | None, status: int | None) -> None:
        self.platform.record("requests", {"endpoint": endpoint, "method": self.command, "path": self.path,
                                          "fault": fault, "status": status, "receivedAt": _now_iso()})

    # --- control API ---

    def _control(self, path: str, body: bytes) -> None:
        platform = self.platform
        try:
            req = json.loads(body) if body.strip() else {}
            if not isinstance(req, dict):
                raise ControlError("the body must be a JSON object")
            if path == "/_control/tool":
                answer = platform.register_tool(req)
            elif path == "/_control/launch":
                answer = platform.prepare_launch(req)
            elif path == "/_control/sign":
                answer = platform.sign_claims(req)
            elif path == "/_control/rotate":
                _check_fields(req, {"keep_old"})
                if not isinstance(req.get("keep_old", False), bool):
                    raise ControlError("keep_old must be a boolean")
                answer = {"kid": platform.rotate(req.get("keep_old", False))}
            elif path == "/_control/expire-tokens":
                answer = {"expired": platform.expire_tokens()}
            elif path == "/_control/fail-next":
                answer = platform.set_fault(req)
            elif path == "/_control/not-student":
                answer = platform.mark_not_student(req)
            elif path == "/_control/reset":
                platform.reset()
                answer = {"ok": True}
            else:
                self._send(404, "text/plain", b"not found\n")
                return
        except (ControlError, ValueError) as err:
            self._send_json(400, {"error": "bad_control_request", "error_description": str(err)})
            return
        self._send_json(200, answer)

    # --- plumbing ---

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""  # e.g. a bodiless POST /_control/reset
        if not length.isdigit():
            self._send(400, "text/plain", b"bad Content-Length\n")
            return None
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _send_json(self, status: int, value, headers: dict | None = None) -> None:
        self._send(status, "application/json", json.dumps(value).encode("utf-8"), headers)

    def _send(self, status: int, content_type: str, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 (signature fixed by http.server)
        log.debug("%s %s", self.address_string(), format % args)


class PlatformServer(ThreadingHTTPServer):
    """The HTTP server; `platform` is what tests reach in-process."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], token_ttl: int = 3600) -> None:
        super().__init__(address, _Handler)
        # The issuer is the exact base URL the platform is reached at.
        self.platform = Platform(f"http://{address[0]}:{self.server_address[1]}", token_ttl)

    def server_close(self) -> None:
        self.platform.hang_release.set()
        super().server_close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="LTI 1.3 / AGS 2.0 stand-in platform")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; also the issuer's host")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token-ttl", type=int, default=3600, metavar="SECONDS",
                        help="expires_in of issued access tokens")
    parser.add_argument("--verbose", action="store_true", help="also log every HTTP request")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="lti13-platform %(levelname)s %(message)s")
    server = PlatformServer((args.host, args.port), args.token_ttl)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    log.info("issuer %s", server.platform.issuer)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
