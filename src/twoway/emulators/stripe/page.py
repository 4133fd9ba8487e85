"""The small HTML dashboard at `/`: list, create, edit and delete customers."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from twoway.emulators.stripe.state import Obj, Store

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
input{padding:.2rem}code{font-size:.85em}.err{background:#fdd;padding:.5rem;margin-bottom:1rem}
form{display:inline}button{cursor:pointer}
"""
_MAX_ROWS = 500  # keep the page cheap when a benchmark has created many thousands


def render(store: Store, error: str | None = None) -> str:
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
</table></body></html>"""


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
