"""The small HTML dashboard at `/`: the platform's customers (create, edit, delete) and invoices (lifecycle
buttons), and the list of accounts."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from twoway.emulators.stripe.accounts import Accounts
from twoway.emulators.stripe.state import Obj, Store

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
input{padding:.2rem}code{font-size:.85em}.err{background:#fdd;padding:.5rem;margin-bottom:1rem}
form{display:inline}button{cursor:pointer}
"""
_MAX_ROWS = 500  # keep the page cheap when a benchmark has created many thousands
# Which lifecycle buttons an invoice in each status shows (the API refuses the others anyway).
_ACTIONS = {
    "draft": ("finalize", "pay", "delete"),
    "open": ("pay", "void", "mark_uncollectible"),
    "uncollectible": ("pay", "void"),
}


def render(accounts: Accounts, error: str | None = None) -> str:
    store = accounts.platform.store
    rows = [_row(c) for c in list(reversed(store.customers.values()))[:_MAX_ROWS]]
    shown = f"{min(len(store.customers), _MAX_ROWS)} of {len(store.customers)}"
    error_html = f'<div class="err">{escape(error)}</div>' if error else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Stripe emulator</title><style>{_STYLE}</style></head>
<body><h1>Stripe emulator</h1>{error_html}
<h2>New customer</h2>
<form method="post" action="/_emulator/ui/customers">
<input name="name" placeholder="name"> <input name="email" placeholder="email">
<button type="submit">Create</button></form>
<h2>Customers ({shown})</h2>
<table><tr><th>id</th><th>name / email</th><th>metadata</th><th></th></tr>
{"".join(rows)}
</table>
{_invoices(store)}
{_accounts(accounts)}
</body></html>"""


def _accounts(accounts: Accounts) -> str:
    rows = []
    for account in list(accounts)[:_MAX_ROWS]:
        s = account.summary(account is accounts.platform)
        kind = "platform" if s["platform"] else "deauthorized" if s["deauthorized"] else "connected"
        keys = "active" if s["keys_active"] else "revoked"
        rows.append(f"<tr><td><code>{escape(s['id'])}</code></td><td>{kind}</td><td>{keys}</td>"
                    f"<td>{s['customers']}</td><td>{s['invoices']}</td><td>{s['events']}</td></tr>")
    return f"""<h2>Accounts ({len(accounts.by_id)})</h2>
<table><tr><th>id</th><th>access</th><th>keys</th><th>customers</th><th>invoices</th><th>events</th></tr>
{"".join(rows)}
</table>"""


def _invoices(store: Store) -> str:
    invoices = store.book.invoices
    rows = [_invoice_row(store, i) for i in list(reversed(invoices.values()))[:_MAX_ROWS]]
    return f"""<h2>Invoices ({min(len(invoices), _MAX_ROWS)} of {len(invoices)})</h2>
<table><tr><th>id / number</th><th>customer</th><th>status</th><th>total</th><th>lines</th><th>metadata</th>
<th></th></tr>
{"".join(rows)}
</table>"""


def _invoice_row(store: Store, invoice: Obj) -> str:
    action = "/_emulator/ui/invoices/" + quote(invoice["id"])
    buttons = "".join(
        f'<form method="post" action="{action}/{verb}"><button type="submit">{verb.replace("_", " ")}</button></form> '
        for verb in _ACTIONS.get(invoice["status"], ())
    )
    lines = "<br>".join(
        f"{escape(i['description'] or '')} &times; {escape(i['quantity_decimal'])} = "
        + _money(i["amount"], i["currency"])
        for i in store.book.attached_items(invoice["id"])[:20]
    )
    meta = ", ".join(f"{escape(k)}={escape(v)}" for k, v in invoice["metadata"].items())
    return f"""<tr><td><code>{escape(invoice["id"])}</code><br>{escape(invoice["number"] or "")}</td>
<td><code>{escape(invoice["customer"])}</code></td><td>{escape(invoice["status"])}</td>
<td>{_money(invoice["total"], invoice["currency"])}</td><td>{lines}</td><td>{meta}</td><td>{buttons}</td></tr>
"""


def _money(amount: int, currency: str) -> str:
    # Display only: two decimals, whatever the currency's exponent.
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d} {escape(currency.upper())}"


def _row(customer: Obj) -> str:
    ident = escape(customer["id"])
    action = "/_emulator/ui/customers/" + quote(customer["id"])
    meta = ", ".join(f"{escape(k)}={escape(v)}" for k, v in customer["metadata"].items())
    return f"""<tr><td><code>{ident}</code></td>
<td><form method="post" action="{action}">
<input name="name" value="{escape(customer.get("name") or "")}">
<input name="email" value="{escape(customer.get("email") or "")}">
<button type="submit">Save</button></form></td>
<td>{meta}</td>
<td><form method="post" action="{action}/delete"><button type="submit">Delete</button></form></td></tr>
"""
