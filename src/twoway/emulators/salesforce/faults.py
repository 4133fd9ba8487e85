"""The Salesforce emulator's knobs: the shared request faults, nothing of its own yet."""

from __future__ import annotations

from twoway.emulators.kit.faults import Faults

__all__ = ["Faults"]
