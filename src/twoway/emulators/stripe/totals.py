"""Invoice totals from its items (pure). No taxes or discounts in the emulator."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MAX_ITEMS_PER_INVOICE = 250

# Stripe's supported presentment currencies (lowercase ISO 4217).
_CURRENCY_TEXT = """
usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd bwp byn bzd cad cdf chf
clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr
ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk
mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp
sle sos srd std szl thb tjs top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw
"""
CURRENCIES = frozenset(_CURRENCY_TEXT.split())


def line_amount(unit_amount: Decimal, quantity: Decimal) -> int:
    """Unit price times quantity, rounded half up to the currency's smallest unit."""
    return int((unit_amount * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_decimal(raw: object) -> Decimal | None:
    """A finite decimal from a form value, or None when it is not one."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def decimal_text(value: Decimal) -> str:
    """How Stripe prints decimal strings: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def compute(amounts: Iterable[int], amount_paid: int = 0, amount_paid_off_stripe: int = 0) -> dict[str, int]:
    """The invoice's money fields from its line amounts and what was paid.

    A negative total is a credit: nothing is due (Stripe moves it to the customer balance).
    """
    subtotal = sum(amounts)
    total = subtotal
    amount_due = max(0, total)
    return {
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "total": total,
        "total_excluding_tax": total,
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_paid_off_stripe": amount_paid_off_stripe,
        "amount_remaining": max(0, amount_due - amount_paid),
    }
