"""The optional state file: the shared one (emulators/kit), over the Stripe store."""

from __future__ import annotations

from twoway.emulators.kit.persist import Persister

__all__ = ["Persister"]
