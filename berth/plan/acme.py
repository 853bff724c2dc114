"""tls.mode letsencrypt: what the certbot container and the proxy's certificate watcher are given.

Pure: settings in, paths, environment and script text out. The design (README, "TLS"):

- one certificate for every server name of the proxy (lineage CERT_NAME): one order per change of
  names, one file for nginx to watch, and one reload;
- certbot (the official image) runs ``files/acme.py`` as a long-running container: it orders over
  HTTP-01 from WEBROOT, renews twice a day, and writes key + chain to SERVED_PEM with one rename;
- nginx serves WEBROOT on port 80 and runs ``files/nginx-tls.sh`` as its entrypoint, which serves
  SERVED_PEM (or the temporary certificate until there is one) and reloads nginx when it changes;
- the ACME account and certificates live on the ``letsencrypt`` volume, retained like data, so a
  replaced container never orders again; the webroot and SERVED_PEM are on the ``acme`` volume.
"""

from __future__ import annotations

from pathlib import Path

from berth.plan.nginx import ACME_SHARED as SHARED_DIR
from berth.plan.nginx import TLS_COMBINED, server_names
from berth.settings import Settings
from berth.settings.tls import acme_server

# The lineage name: /etc/letsencrypt/live/<CERT_NAME>/.
CERT_NAME = "proxy"
# certbot's own state: account, certificates, renewal config (the letsencrypt volume).
LETSENCRYPT_DIR = "/etc/letsencrypt"
SERVED_PEM = f"{SHARED_DIR}/live/tls.pem"
# Inside the certbot container.
SCRIPT_PATH = "/usr/local/lib/berth/acme.py"
CA_BUNDLE_PATH = "/usr/local/lib/berth/acme-ca.pem"
# Inside the proxy container: the entrypoint, the temporary certificate and the one nginx serves.
WATCHER_PATH = "/usr/local/lib/berth/nginx-tls.sh"
TEMPORARY_PEM = "temporary.pem"
ACTIVE_PEM = TLS_COMBINED
# The watcher looks for a new certificate this often (seconds): a renewal is served within about this.
POLL_SECONDS = 1
# The volumes, by their settings-side names (docker_name() makes them <name>-<env>-...).
STATE_VOLUME = "letsencrypt"
SHARED_VOLUME = "acme"
_FILES = Path(__file__).parent / "files"


def certbot_env(settings: Settings) -> dict[str, str]:
    """The certbot container's environment (the EAB HMAC key is secret and added by the component)."""
    proxy = settings.proxy
    assert proxy is not None and proxy.tls.acme is not None
    acme = proxy.tls.acme
    env = {
        "BERTH_ACME_DOMAINS": ",".join(server_names(settings)),
        "BERTH_ACME_SERVER": acme_server(settings),
        "BERTH_ACME_KEY_TYPE": acme.key_type,
        "BERTH_ACME_CERT_NAME": CERT_NAME,
        "BERTH_ACME_SHARED": SHARED_DIR,
        "BERTH_ACME_PROXY": "proxy",  # the proxy's alias on the edge network
    }
    if acme.email:
        env["BERTH_ACME_EMAIL"] = acme.email
    if acme.eab:
        env["BERTH_ACME_EAB_KID"] = acme.eab.key_id
    if acme.ca_bundle:
        env["REQUESTS_CA_BUNDLE"] = CA_BUNDLE_PATH  # certbot's HTTP client (requests) reads it
    return env


def watcher_env(tls_dir: str) -> dict[str, str]:
    """The proxy container's environment for nginx-tls.sh."""
    return {"BERTH_TLS_SOURCE": SERVED_PEM, "BERTH_TLS_ACTIVE": f"{tls_dir}/{ACTIVE_PEM}",
            "BERTH_TLS_TEMPORARY": f"{tls_dir}/{TEMPORARY_PEM}", "BERTH_TLS_POLL": str(POLL_SECONDS)}


def certbot_health() -> list[str]:
    """The certbot container's healthcheck: the last attempt succeeded, and the certificate has 14+ days."""
    return ["CMD", "python3", SCRIPT_PATH, "health"]


def certbot_script() -> str:
    """files/acme.py: the certbot container's loop, deploy hook and healthcheck."""
    return (_FILES / "acme.py").read_text()


def watcher_script() -> str:
    """files/nginx-tls.sh: the proxy's entrypoint, which reloads nginx on a new certificate."""
    return (_FILES / "nginx-tls.sh").read_text()
