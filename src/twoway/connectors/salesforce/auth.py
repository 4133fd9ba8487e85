"""Our own OAuth 2 against a configurable login URL (simple-salesforce's login only knows
`*.salesforce.com`): client credentials, or JWT bearer with a private key. No refresh token:
a new token is fetched whenever Salesforce says INVALID_SESSION_ID."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests

from twoway.connectors.base import ConnectorError

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str

    def __repr__(self) -> str:  # never the token itself in a log
        return f"Token(instance_url={self.instance_url!r})"


@dataclass(frozen=True)
class TokenSource:
    login_url: str
    client_id: str
    client_secret: str | None = None
    jwt_key_file: str | None = None
    username: str | None = None
    audience: str | None = None
    timeout: float = 30.0

    @property
    def flow(self) -> str:
        return "jwt-bearer" if self.jwt_key_file else "client-credentials"

    def fetch(self, session: requests.Session) -> Token:
        """Blocking (runs in the connector's thread pool)."""
        if self.jwt_key_file:
            if not self.username:
                raise ConnectorError("SALESFORCE_USERNAME is required with SALESFORCE_JWT_KEY_FILE", transient=False)
            claims = {"iss": self.client_id, "sub": self.username, "aud": self.audience or self.login_url,
                      "exp": int(time.time()) + 180}
            assertion = jwt.encode(claims, Path(self.jwt_key_file).read_bytes(), algorithm="RS256")
            form = {"grant_type": JWT_GRANT, "assertion": assertion}
        else:
            form = {"grant_type": "client_credentials", "client_id": self.client_id,
                    "client_secret": self.client_secret or ""}
        url = self.login_url.rstrip("/") + "/services/oauth2/token"
        try:
            answer = session.post(url, data=form, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConnectorError(f"salesforce token: {type(exc).__name__}", transient=True, outage=True)
        if answer.status_code >= 500:
            raise ConnectorError(f"salesforce token: {answer.status_code}", transient=True, status=answer.status_code)
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or "access_token" not in body:
            # OAuth's error names say what is wrong (invalid_client, invalid_grant) without any secret.
            reason = body.get("error") if isinstance(body, dict) else None
            raise ConnectorError(f"salesforce token refused ({self.flow}): {reason or answer.status_code}",
                                 transient=False, status=answer.status_code, code=str(reason or "auth"))
        return Token(body["access_token"], body["instance_url"])
