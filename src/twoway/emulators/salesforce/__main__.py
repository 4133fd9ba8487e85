"""`python -m twoway.emulators.salesforce [--port N ...]`: the same options as `twoway emulator salesforce`."""

from __future__ import annotations

import typer

from twoway.emulators.salesforce.cli import salesforce


def main() -> None:
    typer.run(salesforce)


if __name__ == "__main__":
    main()
