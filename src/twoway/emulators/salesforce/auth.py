"""The OAuth 2 token endpoint: client credentials and JWT bearer. Answers in OAuth's error shape."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt

from twoway.emulators.salesforce.config import SalesforceConfig
from twoway.emulators.salesforce.store import ORG_ID, Obj, Store

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def issue(store: Store, user: Obj, instance_url: str, ttl_seconds: float) -> Obj:
    token = f"{ORG_ID[:15]}!" + secrets.token_urlsafe(48)
    store.add_token(token, user["Id"], int(ttl_seconds * 1000))
    return {"access_token": token, "instance_url": instance_url, "token_type": "Bearer",
            "id": f"{instance_url}/id/{ORG_ID}/{user['Id']}", "issued_at": str(store.now_ms()),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(), "scope": "api"}


def token(store: Store, config: SalesforceConfig, raw: bytes, authorization: str | None,
          instance_url: str) -> Obj:
    form = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    grant = form.get("grant_type")
    if grant == "client_credentials":
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            client_id, client_secret = _basic(authorization)
        if client_id != config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not config.client_secret or not secrets.compare_digest(client_secret or "", config.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")
        user = store.user(config.integration_username)
    elif grant == JWT_GRANT:
        user = store.user(_jwt_subject(config, form.get("assertion") or "", instance_url))
    elif grant == "password":
        raise OAuthError("invalid_grant", "authentication failure (the username-password flow is disabled)")
    else:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    return issue(store, user, instance_url, config.token_ttl_seconds)


def _basic(header: str) -> tuple[str | None, str | None]:
    try:
        user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, IndexError):
        raise OAuthError("invalid_client", "invalid client credentials")
    return user, password


def _jwt_subject(config: SalesforceConfig, assertion: str, instance_url: str) -> str:
    if not config.jwt_public_key_file:
        raise OAuthError("invalid_grant", "no certificate is registered for this connected app")
    key = Path(config.jwt_public_key_file).read_bytes()
    audiences = ["https://login.salesforce.com", "https://test.salesforce.com", instance_url]
    try:
        claims: dict[str, Any] = jwt.decode(assertion, _public_key(key), algorithms=["RS256"], audience=audiences,
                                            options={"require": ["iss", "sub", "aud", "exp"]})
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_grant", "expired authorization code")
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_grant", f"invalid assertion: {type(exc).__name__}")
    if claims["iss"] != config.client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if claims["exp"] > time.time() + 3600:
        raise OAuthError("invalid_grant", "the assertion's exp is too far ahead")
    return str(claims["sub"])


def _public_key(pem: bytes) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if b"CERTIFICATE" in pem:
        return x509.load_pem_x509_certificate(pem).public_key()
    if b"PRIVATE KEY" in pem:
        return serialization.load_pem_private_key(pem, password=None).public_key()
    return serialization.load_pem_public_key(pem)
