"""The small HTML page at `/`: list, create, edit and delete Accounts (as a person, not the integration user)."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from twoway.emulators.salesforce import schema
from twoway.emulators.salesforce.store import Obj, Store

EDITABLE = ("Name", "Email__c", "Phone", "Twoway_Id__c")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
input{padding:.2rem}code{font-size:.85em}.err{background:#fdd;padding:.5rem;margin-bottom:1rem}
form{display:inline}button{cursor:pointer}.muted{color:#777}
"""
_MAX_ROWS = 500  # keep the page cheap when a benchmark has created many thousands


def render(store: Store, error: str | None = None) -> str:
    live = [r for r in store.records.values() if not r["IsDeleted"]]
    rows = [_row(r, store) for r in list(reversed(live))[:_MAX_ROWS]]
    used, limit = store.usage_now()
    error_html = f'<div class="err">{escape(error)}</div>' if error else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Salesforce emulator</title><style>{_STYLE}</style></head>
<body><h1>Salesforce emulator</h1>{error_html}
<p class="muted">API usage today: {used}/{limit}. In the recycle bin: {len(store.records) - len(live)}.</p>
<h2>New Account</h2>
<form method="post" action="/_emulator/ui/accounts">
<input name="Name" placeholder="Name"> <input name="Email__c" placeholder="Email__c">
<button type="submit">Create</button></form>
<h2>Accounts ({min(len(live), _MAX_ROWS)} of {len(live)})</h2>
<table><tr><th>Id</th><th>Name / Email__c</th><th>Twoway_Id__c</th><th>last modified</th><th></th></tr>
{"".join(rows)}
</table></body></html>"""


def _row(record: Obj, store: Store) -> str:
    ident = escape(record["Id"])
    action = "/_emulator/ui/accounts/" + quote(record["Id"])
    by = store.users.get(record["LastModifiedById"] or "", {}).get("Username", record["LastModifiedById"])
    return f"""<tr><td><code>{ident}</code></td>
<td><form method="post" action="{action}">
<input name="Name" value="{escape(record.get("Name") or "")}">
<input name="Email__c" value="{escape(record.get("Email__c") or "")}">
<button type="submit">Save</button></form></td>
<td>{escape(record.get("Twoway_Id__c") or "")}</td>
<td class="muted">{escape(schema.render_ms(record["SystemModstamp"]))} by {escape(str(by))}</td>
<td><form method="post" action="{action}/delete"><button type="submit">Delete</button></form></td></tr>
"""
