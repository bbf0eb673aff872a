"""The ``fisherlab`` command line (typer).

Each command is a thin wrapper: it parses options, imports its module lazily
(so ``fisherlab analyze`` never imports torch) and calls one library function.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fisherlab",
    help="Fisher-information learning dynamics for multilingual adapter fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
