"""Random identifiers shaped like Stripe's."""

from __future__ import annotations

import random
import secrets
import string

_ALNUM = string.ascii_letters + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits


def rand_id(prefix: str, length: int = 14) -> str:
    # `random` rather than `secrets`: ids are not secrets and this runs on every request.
    return prefix + "".join(random.choices(_ALNUM, k=length))


def invoice_prefix() -> str:
    return "".join(random.choices(_UPPER_ALNUM, k=8))


def webhook_secret() -> str:
    return "whsec_" + "".join(secrets.choice(_ALNUM) for _ in range(32))
