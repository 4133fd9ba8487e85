"""A stateful, in-memory Stripe API emulator for development, tests and benchmarks.

Serves customers, events and webhook endpoints with Stripe's shapes and errors,
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
  the startup values) and cancels pending deliveries; endpoints stay unless
  `{"endpoints": true}`, and the `--webhook-url` endpoint always stays.
- Events kept in memory are capped (`max_events`, 100k), idempotency keys at 200k;
  the state file keeps customers, endpoints and the latest 10k events.
"""

from twoway.emulators.stripe.config import EmulatorConfig

__all__ = ["EmulatorConfig"]
