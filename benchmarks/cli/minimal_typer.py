"""The reference point: a minimal two-command Typer app."""

import typer

app = typer.Typer()


@app.command()
def hello(name: str) -> None:
    typer.echo(f"hello {name}")


@app.command()
def bye(name: str) -> None:
    typer.echo(f"bye {name}")


if __name__ == "__main__":
    app()
