"""``spl config``: read, check and change this home's ``config.toml``."""

from __future__ import annotations

import typer

from spl.cli.common import main_app

__all__ = ["config_app"]

config_app = typer.Typer(help="Show, check and change this home's config.toml.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("path")
def config_path() -> None:
    """Print where this home's config.toml is ($SYNCROPEL_HOME/config.toml)."""
    from spl.cli.common import home

    typer.echo(str(home().config_path))


register(main_app())
