"""A stateful, in-memory Salesforce REST API emulator (Accounts) for development, tests and benchmarks.

Serves `/services/data/vXX.X` (any version from 20.0): sobjects CRUD, upsert by External ID,
`query`/`queryAll` with a SOQL subset and `nextRecordsUrl` paging, `updated`/`deleted`,
`composite/sobjects` (create, update, upsert, delete, retrieve), `limits`, `describe`; and the OAuth 2
token endpoint (client credentials, JWT bearer). Over TLS with a local test CA when asked
(simple-salesforce only builds `https://` URLs).

Behaviour chosen where Salesforce's docs leave room:
- One object, Account, with the standard fields a sync needs plus `Email__c` (Email) and
  `Twoway_Id__c` (unique External ID) and `Legacy_Id__c` (a non-unique External ID, to show 300s).
- Deleted records go to the recycle bin: `IsDeleted = true`, seen by `queryAll` and `deleted/`,
  GET answers 404 `ENTITY_IS_DELETED`. Hard delete (control endpoint) leaves no trace at all.
- Unique values and upsert matches ignore records in the recycle bin.
- The daily API allowance is a rolling 24 hours from the first counted call; every `/services/data`
  call counts one (a composite call of 200 records counts one); the token endpoint counts none.
- Many orgs on one instance (`POST /_emulator/orgs`), each with its own OAuth client, records, users,
  allowance and custom fields; the client picks the org at the token endpoint and the token's org-id
  prefix picks it at the API (orgs.py). The first org comes from the startup options.
- The clock can be moved forward (`POST /_emulator/clock`): system fields, token expiry, the daily
  window and `updated`/`deleted` all read the moved clock.
"""

from twoway.emulators.salesforce.config import SalesforceConfig

__all__ = ["SalesforceConfig"]
