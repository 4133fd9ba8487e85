"""A stateful, in-memory Stripe API emulator for development, tests and benchmarks.

Serves customers, invoices, invoice items, events and webhook endpoints with Stripe's shapes and errors,
delivers signed webhooks with retries, honours Idempotency-Key, and injects
faults (errors, rate limits, latency, dropped/duplicated/reordered/delayed
webhooks, rejected names/emails) that can be changed at runtime through
`POST /_emulator/faults`.

Behaviour chosen where Stripe's docs leave room:
- An update that changes nothing returns the customer and records no event.
- `customer.deleted` carries the full customer as it was; retrieving a deleted
  customer answers 200 with `{"id", "object": "customer", "deleted": true}`.
- A cursor naming a deleted customer still pages from its position.
- Idempotency: results are saved once execution begins (2xx and 404s); parameter
  validation 400s, reject_pattern 400s and injected 5xx/429s are not saved.
  Requests run atomically on the event loop, so two concurrent requests with one
  key never both execute: the second replays the first's answer.
- Test and live keys share one data set; `livemode` follows the key used.
- Reset clears customers, events, idempotency keys, counters and faults (back to
  the startup values) of every account and cancels pending deliveries; endpoints stay unless
  `{"endpoints": true}`, and the `--webhook-url` endpoint always stays; accounts stay unless
  `{"accounts": true}`.
- Events kept in memory are capped (`max_events`, 100k), idempotency keys at 200k;
  the state file keeps customers, invoices, invoice items, endpoints and the latest 10k events.

Accounts (`accounts.py`): every key nobody owns acts on the platform, the one account there was before
accounts. `POST /_emulator/accounts` -> `{"id": "acct_…", "secret_key": "sk_test_…"}` makes an account with
its own customers, invoices, events, webhook endpoints, idempotency keys and rate-limit buckets; its key acts
on it, and the platform's key with `Stripe-Account: acct_…` does too (Connect). Endpoints made on the platform
with `connect=true` get every connected account's events, with a top-level `account`. `GET /v1/account` is the
account a call acts on. Control: `GET /_emulator/accounts` (a summary each), `POST /_emulator/accounts/{id}/`
`revoke_keys` (its keys answer 401), `roll_keys` (-> a new `secret_key`, the old ones answer 401),
`deauthorize` (`Stripe-Account` calls answer 403 `account_invalid`; `account.application.deauthorized` goes to
the Connect endpoints first; -> `{"id", "deauthorized": true, "event"}`) and `authorize` (connected again).
`GET /_emulator/customers` and `/_emulator/invoices` take `?account=acct_…`; the stats count every account's
requests and the platform's objects. The state file keeps accounts, keys and each account's data.

Rate limits (`limits.py`; Stripe's numbers from docs.stripe.com/rate-limits). Off by default: then
only `--rate-limit-per-second` (one bucket for everything) answers 429s, as before. `--limits live`
(or `sandbox`, or `key`: by the key's mode, `sk_live_`/`rk_live_` being live) turns on Stripe's
limiters: a global bucket (100/s live, 25/s sandbox; `--rate-limit-per-second` overrides) and one per
endpoint, a route such as `POST /v1/customers/{id}` (`--endpoint-rate-limit` 25/s, search routes
`--search-rate-limit` 20/s, `--endpoint-limit 'POST /v1/customers=10'` for one), each account's apart
and live and test keys counted apart; `--concurrency-limit N` caps requests in flight. A 429 has Stripe's body (code
`rate_limit`) and `Stripe-Rate-Limited-Reason` header, plus `Twoway-Emulator-Limiter: global |
endpoint:<route> | concurrency`. All are fault knobs too (`limits`, `endpoint_rate_limit_per_second`,
`search_rate_limit_per_second`, `endpoint_limits`, `concurrency_limit`). `GET /_emulator/stats` has
`per_second` (requests the limiters let through, per route and `*` for all, per wall-clock second,
the last 300 s) and `peak_per_second`.

Invoices (`/v1/invoices`, `/v1/invoiceitems`; facts in ../shared/STRIPE-INVOICES.md):
- The lifecycle is the table in `lifecycle.py`; refusals are 400 `invalid_request_error`, item
  changes on a finalized invoice carry `code=invoice_not_editable`, unknown ids are 404s.
- Numbers are `{customer.invoice_prefix}-{seq:04d}` at finalization (the customer's
  `next_invoice_sequence` goes up without a customer event). Totals are the sum of the items
  (no tax, no discounts); a negative total leaves `amount_due` 0; $0 is paid at finalization.
- Each call records its named events (`invoice.finalized`, `invoice.paid`, ...), each with the
  invoice as it was at that step, then one `invoice.updated` whose `previous_attributes` go
  from before the call to after it (so paying a draft is one update from draft to paid).
  Item changes on a draft also update the invoice's totals (`invoice.updated`).
- `pay` without `paid_out_of_band=true` on an invoice with something due answers 400 (the
  emulator has no payment methods) and changes nothing, not even a draft's finalization.
- Deleting a draft deletes its items (`invoiceitem.deleted` each). A deleted invoice is a 404.
- `send` finalizes a draft (`send_invoice` invoices only) and records `invoice.sent`; no email.
  `GET /_emulator/invoices` dumps every invoice with all its lines.
- `auto_advance=true` drafts finalize after `--auto-finalize-seconds` (3600); no payment is tried.
- `add_lines` / `update_lines` / `remove_lines` change many lines in one call (all validated
  first), one `invoice.updated` per call. The `invoice_lock_timeout` knob answers overlapping
  writes to one invoice 429 `lock_timeout`; `reject_pattern` also matches descriptions.
"""

from twoway.emulators.stripe.config import EmulatorConfig

__all__ = ["EmulatorConfig"]
