"""ISO 4217 currency codes we accept on an invoice, lowercase as Stripe writes them.

The active list without fund codes (BOV, CHE, CLF, ...), precious metals, the SDR and the test codes:
nobody invoices in those, and Stripe refuses them.
"""

from __future__ import annotations

_CODES = """
aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd btn bwp byn bzd
cad cdf chf clp cny cop crc cuc cup cve czk djf dkk dop dzd egp ern etb eur fjd fkp gbp gel ghs gip
gmd gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw krw kwd kyd
kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr mwk mxn myr mzn nad ngn nio nok
npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek sgd shp sle sll sos
srd ssp stn svc syp szl thb tjs tmt tnd top try ttd twd tzs uah ugx usd uyu uzs ved ves vnd vuv wst
xaf xcd xcg xof xpf yer zar zmw zwg zwl
"""
ISO_4217 = frozenset(_CODES.split())


def normalize(code: str) -> str:
    """The lowercase code, or ValueError naming what is wrong."""
    value = code.strip().lower()
    if value not in ISO_4217:
        raise ValueError(f"unknown currency {code[:10]!r}; use an ISO 4217 code such as 'usd' or 'eur'")
    return value
