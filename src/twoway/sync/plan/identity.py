"""Which record an external object is: our id, and our uid, which a restored database cannot issue again.

Ids go back with a restore: a record made after it may get the id that an object over there already carries
for a record the restore lost. The uid tells them apart. An object with no uid (made before uids, or by a
kind without one) is judged by the id alone, as before.
"""

from __future__ import annotations

import uuid

from twoway.connectors.base import ExternalRecord
from twoway.sync.plan.snapshot import Ours

# Names the uid an import makes for an object that carried none (pure, and the same object gives the same).
_IMPORTS = uuid.UUID("5b1d3f0e-6c0a-4f43-9a38-2f4f0c1f7e21")


def may_be(theirs: ExternalRecord, row: Ours) -> bool:
    """Can this object be our row's? Not when it carries another record's uid."""
    return theirs.uid is None or row.uid is None or theirs.uid == row.uid


def names(theirs: ExternalRecord, internal_id: int, uid: str | None) -> bool:
    """Does a linked object carry our identity (else we write it: `SetInternalId`)? Our id, and no other uid.
    One with no uid is left so: it was made before uids, or the system has nowhere to keep one (an org
    without the field), where writing it again and again would never end."""
    return theirs.internal_id == internal_id and (theirs.uid is None or theirs.uid == uid)


def import_uid(system: str, kind: str, external_id: str) -> str:
    """The uid of an import whose object carries none we may keep: derived from the object, so that a
    re-import of the same object (after a restore) gets the same one."""
    return str(uuid.uuid5(_IMPORTS, f"{system}:{kind}:{external_id}"))
