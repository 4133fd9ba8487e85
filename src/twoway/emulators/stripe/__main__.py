"""`python -m twoway.emulators.stripe [--port N ...]`: the same options as `twoway emulator stripe`."""

from __future__ import annotations

import typer

from twoway.emulators.stripe.cli import stripe


def main() -> None:
    typer.run(stripe)


if __name__ == "__main__":
    main()
