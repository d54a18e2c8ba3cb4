"""
Starts otter-service 2.2.8 (the PyPI package, unmodified) as its console script does
(`otter_service = otter_service.otter_nb:main`), on loopback, for bench/intake-vs-otter-service.ts.

Everything otter-service does per submission runs as published: Tornado's HTTP server and access log,
JupyterHub's HubOAuthenticated auth, the JSON parse, its metadata checks, the notebook written to
/tmp, the submission written to Firestore, and the grading task spawned on the event loop. The
services it calls are configured by the environment variables it (and its libraries) read, set by the
bench:

- JUPYTERHUB_API_URL / _API_TOKEN / _CLIENT_ID / _SERVICE_NAME / _SERVICE_PREFIX / _OAUTH_ACCESS_SCOPES:
  as a JupyterHub sets them for a managed service named otter_grade; the API is bench/otter-service/
  standins.py's stand-in hub on loopback.
- FIRESTORE_EMULATOR_HOST: google-cloud-firestore's own switch to an insecure channel to an emulator;
  it points at standins.py's stand-in Firestore on loopback.
- GOOGLE_APPLICATION_CREDENTIALS: firebase_admin.initialize_app(credentials.ApplicationDefault()) at
  import needs Application Default Credentials. This launcher writes a syntactically valid service
  account file with a key generated now (no Google account has it) and a token_uri on 127.0.0.1:9; the
  emulator channel sends no credentials, so it is only ever parsed. GCE_METADATA_HOST/_IP and
  NO_GCE_CHECK keep google-auth from probing a metadata server anywhere but loopback.
- Grading fails harmlessly at its first step: grade_assignment.download_autograder_materials reads
  the GitHub App credentials with os.environ["github_app_id"], unset here, so the spawned
  _grade_and_post raises KeyError before any network or subprocess, logs the error to the (stand-in)
  Firestore as it logs any grading failure, and removes the /tmp notebook. POST_GRADE=false besides.

The one thing patched, and only outside otter-service's code: Tornado's HTTPServer.listen, which
otter_nb.start_server calls as listen(10101), on every interface. The patch listens on
127.0.0.1:$OTTER_SERVICE_PORT instead (10101 when unset), so that the bench can pick a free port and
nothing listens beyond loopback. No handler, auth, Firestore or grading code is replaced.
"""
import json
import os
import shutil
import sys
import tempfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def fake_service_account(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": os.environ.get("GCP_PROJECT_ID", "otter-service-bench"),
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": "otter-service-bench@otter-service-bench.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "http://127.0.0.1:9/token",
    }
    path = os.path.join(directory, "fake-service-account.json")
    with open(path, "w", encoding="utf8") as f:
        json.dump(info, f)
    os.chmod(path, 0o600)
    return path


def main():
    for name, prefix in (("JUPYTERHUB_API_URL", "http://127.0.0.1:"), ("FIRESTORE_EMULATOR_HOST", "127.0.0.1:")):
        if not os.environ.get(name, "").startswith(prefix):
            sys.exit(f"launch.py: {name} must point at loopback ({prefix}…), got {os.environ.get(name)!r}")
    if not os.environ.get("JUPYTERHUB_API_TOKEN"):
        sys.exit("launch.py: JUPYTERHUB_API_TOKEN is not set")
    for unset in ("github_app_id", "github_app_private_key", "github_app_installation_id"):
        if unset in os.environ:
            sys.exit(f"launch.py: {unset} is set; grading must fail before it reaches GitHub")

    workdir = tempfile.mkdtemp(prefix="otter-service-bench-")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = fake_service_account(workdir)
    os.environ.setdefault("GCP_PROJECT_ID", "otter-service-bench")
    os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
    os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
    os.environ["NO_GCE_CHECK"] = "true"

    import tornado.httpserver

    port = int(os.environ.get("OTTER_SERVICE_PORT", "10101"))
    listen = tornado.httpserver.HTTPServer.listen

    def listen_on_loopback(self, _port, address=None, *args, **kwargs):
        return listen(self, port, "127.0.0.1", *args, **kwargs)

    tornado.httpserver.HTTPServer.listen = listen_on_loopback

    from otter_service import otter_nb  # firebase_admin.initialize_app runs here

    import firebase_admin
    import jupyterhub
    import otter_service
    from google.cloud.firestore_v1 import __version__ as firestore_version

    versions = {"otter_service": otter_service.__version__, "tornado": tornado.version, "jupyterhub": jupyterhub.__version__, "firebase_admin": firebase_admin.__version__, "google-cloud-firestore": firestore_version, "python": sys.version.split()[0]}
    print(json.dumps({"listening": f"http://127.0.0.1:{port}{otter_nb.PREFIX}", "module": otter_nb.__file__, "versions": versions}), flush=True)
    try:
        otter_nb.main()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
