"""The OAuth 2 token endpoint: client credentials and JWT bearer. Answers in OAuth's error shape.

The client (its id, or the JWT's `iss`) names the org; the token issued begins with that org's id."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import jwt

from twoway.emulators.salesforce.orgs import Org, Orgs
from twoway.emulators.salesforce.store import Obj

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def issue(org: Org, user: Obj, instance_url: str, ttl_seconds: float) -> Obj:
    token = f"{org.org_id[:15]}!" + secrets.token_urlsafe(48)
    org.store.add_token(token, user["Id"], int(ttl_seconds * 1000))
    return {"access_token": token, "instance_url": instance_url, "token_type": "Bearer",
            "id": f"{instance_url}/id/{org.org_id}/{user['Id']}", "issued_at": str(org.store.now_ms()),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(), "scope": "api"}


def token(orgs: Orgs, ttl_seconds: float, raw: bytes, authorization: str | None, instance_url: str) -> Obj:
    form = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    grant = form.get("grant_type")
    if grant == "client_credentials":
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            client_id, client_secret = _basic(authorization)
        org = orgs.for_client(client_id)
        if org is None:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not secrets.compare_digest(client_secret or "", org.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")
        user = org.store.user(org.integration_username)
    elif grant == JWT_GRANT:
        org, subject = _jwt_subject(orgs, form.get("assertion") or "", instance_url)
        user = org.store.user(subject)
    elif grant == "password":
        raise OAuthError("invalid_grant", "authentication failure (the username-password flow is disabled)")
    else:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    return issue(org, user, instance_url, ttl_seconds)


def _basic(header: str) -> tuple[str | None, str | None]:
    try:
        user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, IndexError):
        raise OAuthError("invalid_client", "invalid client credentials")
    return user, password


def _jwt_subject(orgs: Orgs, assertion: str, instance_url: str) -> tuple[Org, str]:
    """(org, username). The unverified `iss` only picks whose certificate checks the signature."""
    try:
        issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_grant", f"invalid assertion: {type(exc).__name__}")
    org = orgs.for_client(issuer) if isinstance(issuer, str) else None
    if org is None:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if not org.jwt_public_key:
        raise OAuthError("invalid_grant", "no certificate is registered for this connected app")
    audiences = ["https://login.salesforce.com", "https://test.salesforce.com", instance_url]
    try:
        claims: dict[str, Any] = jwt.decode(assertion, _public_key(org.jwt_public_key.encode()), algorithms=["RS256"],
                                            audience=audiences, options={"require": ["iss", "sub", "aud", "exp"]})
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_grant", "expired authorization code")
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_grant", f"invalid assertion: {type(exc).__name__}")
    if claims["exp"] > time.time() + 3600:
        raise OAuthError("invalid_grant", "the assertion's exp is too far ahead")
    return org, str(claims["sub"])


def _public_key(pem: bytes) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if b"CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    if b"PRIVATE KEY" in pem:
        return serialization.load_pem_private_key(pem, password=None).public_key()
    return serialization.load_pem_public_key(pem)
