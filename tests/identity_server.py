"""A stand-in for the Microsoft identity platform on 127.0.0.1, over HTTPS with a certificate made here.

msal talks to it as to login.microsoftonline.com (authority ``https://127.0.0.1:PORT/TENANT`` with
instance discovery off): OpenID discovery, client credentials, device code and refresh-token grants.
Access tokens are the Issuer's (tests/smtp_server.py), so the SMTP server accepts exactly what this
hands out.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trustme

from tests.smtp_server import MAILBOX, Issuer

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "5f0c8d1e-0000-4000-8000-00000000c11e"
CLIENT_SECRET = "client-secret-canary-91b2-NEVER-PRINT"  # a canary: searched for in outputs
DEVICE_CODE = "device-code-canary-3c4d"
USER_CODE = "QWERTY-42"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@dataclass
class Identity:
    issuer: Issuer
    port: int = 0
    access_lifetime: int = 3599  # seconds; the device-code grant's first token can be made short-lived
    grants: list[str] = field(default_factory=list)  # grant_type of each token request, in order
    refresh_tokens: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None
    ca_file: Path | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def id_token(self) -> str:
        now = int(time.time())  # msal checks exp/nbf against the real clock
        claims = {
            "aud": CLIENT_ID,
            "iss": f"{self.base}/{TENANT}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": "oid-1",
            "sub": "sub-1",
            "tid": "tenant-guid",
            "preferred_username": MAILBOX,
        }
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if form.get("client_id") != CLIENT_ID:
            return 400, {"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found"}
        if grant == "client_credentials":
            if form.get("client_secret") != CLIENT_SECRET:
                return 401, {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1",
                }
            if form.get("scope") != "https://outlook.office365.com/.default":
                return 400, {"error": "invalid_scope", "error_description": f"AADSTS70011: {form.get('scope')}"}
            return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": self.issuer.current}
        if grant == "urn:ietf:params:oauth:grant-type:device_code" and form.get("device_code") == DEVICE_CODE:
            return 200, self._user_tokens(self.access_lifetime)
        if grant == "refresh_token" and form.get("refresh_token") in self.refresh_tokens:
            self.refresh_tokens.discard(form["refresh_token"])  # rotated, as Microsoft does
            return 200, self._user_tokens(3599)
        return 400, {"error": "invalid_grant", "error_description": "AADSTS70000: grant is invalid"}

    def _user_tokens(self, lifetime: int) -> dict[str, Any]:
        refresh = f"refresh-{len(self.grants)}"
        self.refresh_tokens.add(refresh)
        return {
            "token_type": "Bearer",
            "scope": "https://outlook.office.com/SMTP.Send",
            "expires_in": lifetime,
            "access_token": self.issuer.current,
            "refresh_token": refresh,
            "id_token": self.id_token(),
            "client_info": _b64({"uid": "oid-1", "utid": "tenant-guid"}),
        }

    def discovery(self) -> dict[str, Any]:
        root = f"{self.base}/{TENANT}"
        return {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        }

    def device_code(self) -> dict[str, Any]:
        return {
            "device_code": DEVICE_CODE,
            "user_code": USER_CODE,
            "verification_uri": f"{self.base}/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": f"To sign in, use a web browser to open the page {self.base}/devicelogin and enter the "
            f"code {USER_CODE} to authenticate.",
        }

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_identity(tmp: Path, issuer: Issuer) -> Identity:
    identity = Identity(issuer)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith(f"/{TENANT}/v2.0/.well-known/openid-configuration"):
                self._answer(200, identity.discovery())
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path.startswith(f"/{TENANT}/oauth2/v2.0/devicecode"):
                self._answer(200, identity.device_code())
            elif self.path.startswith(f"/{TENANT}/oauth2/v2.0/token"):
                self._answer(*identity.token(form))
            else:
                self._answer(404, {"error": "not_found"})

    ca = trustme.CA()
    identity.ca_file = tmp / "identity-ca.pem"
    ca.cert_pem.write_to_path(str(identity.ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    identity.server, identity.port = server, server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return identity
