# A real JupyterHub (6.1, see requirements.txt) for otter-edge's tests: the gateway verifies hub API
# tokens and hub OAuth logins against it. Started by test/support/hub.ts; by hand:
#
#   OTTER_EDGE_HUB_STATE_DIR=$(mktemp -d) OTTER_EDGE_HUB_PORT=8000 \
#     .otter-edge/venv/bin/jupyterhub -f test/hub/jupyterhub_config.py
#
# Environment (only OTTER_EDGE_HUB_STATE_DIR is required):
#   OTTER_EDGE_HUB_STATE_DIR      temp dir for the sqlite db, cookie secret, proxy token and pid file
#   OTTER_EDGE_HUB_PORT           public port (configurable-http-proxy), default 8000
#   OTTER_EDGE_HUB_API_PORT       the hub's own port behind the proxy, default 8081
#   OTTER_EDGE_HUB_PROXY_API_PORT the proxy's REST API port, default 8001
#   OTTER_EDGE_HUB_PASSWORD       the one password every user logs in with (>= 8 chars)
#   OTTER_EDGE_HUB_USERS          optional "alice,bob": only these may log in (default: anyone)
#   OTTER_EDGE_HUB_ADMIN_TOKEN    API token of the admin service `otter-edge-test-admin` (tests use it
#                                 to create users and create/revoke their tokens)
#   OTTER_EDGE_GATEWAY_URL        the gateway, e.g. http://127.0.0.1:8787; absent -> the service has
#                                 no url (no proxy route) and the redirect uri is a placeholder
#   OTTER_EDGE_HUB_SERVICE_TOKEN  api_token of the `otter_grade` service = its OAuth client_secret
#   OTTER_EDGE_HUB_LOGIN_VIA_PROXY 1: the service's OAuth redirect uri is on the hub's origin, under
#                                 /services/otter_grade/ (students sign in through the proxy)
#   OTTER_EDGE_HUB_SERVICE_TIMEOUT seconds the hub waits at start for the gateway url to answer (default 3)
#
# Everything binds to 127.0.0.1. No single-user server is ever spawned: the spawner refuses.
import os
import secrets
from pathlib import Path

from jupyterhub.spawner import Spawner

c = get_config()  # noqa: F821 (provided by traitlets when the hub loads this file)

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ["OTTER_EDGE_HUB_STATE_DIR"]).resolve()
STATE.mkdir(parents=True, exist_ok=True)


def env(name, default=None):
    value = os.environ.get(name, "")
    return value if value else default


def state_secret(name):
    """A random secret kept in the state dir, so a restarted hub on the same dir keeps it."""
    path = STATE / name
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


# --- network: loopback only -------------------------------------------------------------------
public_port = int(env("OTTER_EDGE_HUB_PORT", "8000"))
c.JupyterHub.bind_url = f"http://127.0.0.1:{public_port}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{int(env('OTTER_EDGE_HUB_API_PORT', '8081'))}"

# --- the proxy: configurable-http-proxy from the repo's node_modules ---------------------------
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [str(ROOT / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(env('OTTER_EDGE_HUB_PROXY_API_PORT', '8001'))}"
c.ConfigurableHTTPProxy.auth_token = state_secret("proxy_auth_token")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.should_start = True

# --- state: all under the temp dir --------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")  # the hub creates it (0600)
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.log_level = env("OTTER_EDGE_HUB_LOG_LEVEL", "INFO")

# --- users: one shared password, any name --------------------------------------------------------
# SharedPasswordAuthenticator is JupyterHub's replacement for DummyAuthenticator.password (deprecated
# in 5.3): any allowed username logs in with the one password.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env("OTTER_EDGE_HUB_PASSWORD", "otter-edge-test-password")
users = [u.strip() for u in env("OTTER_EDGE_HUB_USERS", "").split(",") if u.strip()]
if users:
    c.Authenticator.allowed_users = set(users)
    c.Authenticator.allow_all = False
else:
    c.Authenticator.allow_all = True
# Users created through the admin API (POST /hub/api/users/NAME) may log in too.
c.Authenticator.allow_existing_users = True


# --- never spawn a single-user server ------------------------------------------------------------
class NeverSpawner(Spawner):
    """The test hub has no notebook servers: starting one is a bug in the test."""

    async def start(self):
        raise RuntimeError("the otter-edge test hub never spawns single-user servers")

    async def stop(self, now=False):
        pass

    async def poll(self):
        return 0  # "not running"


c.JupyterHub.spawner_class = NeverSpawner
c.JupyterHub.default_url = "/hub/home"  # after login: the hub's home page, not /user/NAME (a spawn)
c.JupyterHub.redirect_to_server = False
c.JupyterHub.implicit_spawn_seconds = 0
c.JupyterHub.cleanup_servers = True

# --- services -------------------------------------------------------------------------------------
gateway_url = env("OTTER_EDGE_GATEWAY_URL")
otter_grade = {
    "name": "otter_grade",
    # Must start with "service-" (JupyterHub validates it); this is also the default for the name.
    "oauth_client_id": "service-otter_grade",
    # Exact-match redirect target of the OAuth authorize step: the gateway's callback on its own
    # origin, or (OTTER_EDGE_HUB_LOGIN_VIA_PROXY=1) under the service's prefix on the hub's origin.
    "oauth_redirect_uri": (
        f"http://127.0.0.1:{public_port}/services/otter_grade/auth/callback"
        if env("OTTER_EDGE_HUB_LOGIN_VIA_PROXY") == "1"
        else (gateway_url.rstrip("/") if gateway_url else "http://127.0.0.1:9") + "/auth/callback"
    ),
    # The service's API token doubles as its OAuth client_secret at /hub/api/oauth2/token.
    "api_token": env("OTTER_EDGE_HUB_SERVICE_TOKEN") or state_secret("service_api_token"),
    # Skip the "Authorize access" page: the hub redirects straight back with ?code=…&state=….
    "oauth_no_confirm": True,
    # Seconds the hub waits at start for `url` to answer before it goes on (JupyterHub >= 6.0).
    "timeout": int(env("OTTER_EDGE_HUB_SERVICE_TIMEOUT", "3")),
}
if gateway_url:
    # The proxy then forwards /services/otter_grade/* (path unchanged) to this URL.
    otter_grade["url"] = gateway_url

c.JupyterHub.services = [
    otter_grade,
    # For the tests themselves: create users, create and revoke their tokens.
    {"name": "otter-edge-test-admin", "api_token": env("OTTER_EDGE_HUB_ADMIN_TOKEN") or state_secret("admin_api_token")},
]

c.JupyterHub.load_roles = [
    # A user may finish OAuth with a service only with access:services for it; the default `user`
    # role ("self") does not include it. (JupyterHub >= 6 also has c.JupyterHub.extra_user_scopes.)
    {"name": "user", "scopes": ["self", "access:services!service=otter_grade"]},
    {"name": "admin", "services": ["otter-edge-test-admin"]},
]
