"""The ``vigil`` command. Thin: parse, call the library, render.

Every user-facing failure is a :class:`vigil.errors.VigilError`, printed as its code,
cause and remedy; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import typer

from vigil.errors import ExitCode, VigilError

if TYPE_CHECKING:
    from vigil.config import Config
    from vigil.engine.hooks import RunHooks
    from vigil.store import RunStore

app = typer.Typer(
    name="vigil",
    help="Run plans of work unattended and safely.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from vigil import __version__

        typer.echo(f"vigil {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    if debug:
        os.environ["VIGIL_DEBUG"] = "1"


def _register() -> None:
    # Each command group lives in its own module and adds itself to the app.
    from vigil.cli import commands

    commands.register(app)


def _follow_up(config: Config, store: RunStore) -> AbstractContextManager[RunHooks]:
    from vigil.followup import follow_up

    return follow_up(config, store)


def _wants_json(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("--format", "-o") and i + 1 < len(argv) and argv[i + 1] == "json":
            return True
        if arg in ("--format=json", "-ojson"):
            return True
    return False


def report_error(err: VigilError, *, as_json: bool) -> None:
    """Print ``err`` for a person (stderr) or, with ``--format json``, as JSON on stdout."""
    if as_json:
        sys.stdout.write(json.dumps({"error": err.to_dict()}, indent=2) + "\n")
        return
    from vigil.cli.common import err_console
    from vigil.cli.terminal import escape

    err_console.print(
        f"[bold red]error[/] [bold]{escape(err.code)}[/]: {escape(err.cause)}", markup=True
    )
    for line in err.details:
        err_console.print(f"  {line}", markup=False)
    err_console.print(f"[dim]remedy:[/] {escape(err.remedy)}", markup=True)


def _store_failure(exc: BaseException) -> VigilError | None:
    """A database driver's error that escaped the store's own mapping, as VIGIL-STORE."""
    import sqlite3

    import psycopg
    import sqlalchemy as sa

    from vigil.errors import StoreError

    if not isinstance(exc, sqlite3.Error | psycopg.Error | sa.exc.DBAPIError):
        return None
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return StoreError(f"the run store failed: {first}", failure="failed")


def _usage_error(exc: typer.TyperException) -> VigilError:
    """A command-line parse error (unknown option, missing argument, bad value) as
    VIGIL-USAGE, with the command's usage line and where its help is."""
    from vigil.errors import UsageError

    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return UsageError(exc.format_message())
    return UsageError(
        exc.format_message(),
        f"See `{ctx.command_path} --help`.",
        details=[ctx.get_usage()],
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vigil`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--review" in args:
        from vigil.cli.run import bare_review

        args = bare_review(args)
    debug = "--debug" in args or os.environ.get("VIGIL_DEBUG") == "1"
    if args != ["--version"]:  # the version needs none of the commands' imports
        _register()
        from vigil.engine import hooks

        # Every run this process drives notifies and writes its report when it ends.
        hooks.install(_follow_up)
    try:
        # Not standalone: a command-line mistake comes back here as click's UsageError,
        # to be reported with a code like every other error.
        code = app(args=args, prog_name="vigil", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.TyperException as exc:
        # Typer's parse errors (its click's UsageError, BadParameter, NoSuchOption...).
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]  # `vigil` or a group alone: its help
            sys.exit(exc.exit_code)
        err = _usage_error(exc)
        if debug:
            traceback.print_exc()
        report_error(err, as_json=_wants_json(args))
        sys.exit(int(err.exit_code))
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(int(ExitCode.CANCELLED))
    except VigilError as err:
        if debug:
            traceback.print_exc()
        report_error(err, as_json=_wants_json(args))
        sys.exit(int(err.exit_code))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(int(ExitCode.CANCELLED))
    except SystemExit:
        raise
    except Exception as exc:
        store_error = _store_failure(exc)
        if store_error is not None:
            if debug:
                traceback.print_exc()
            report_error(store_error, as_json=_wants_json(args))
            sys.exit(int(store_error.exit_code))
        if debug:
            raise
        from vigil.cli.terminal import printable

        sys.stderr.write(
            f"error VIGIL-INTERNAL: {type(exc).__name__}: {printable(exc, multiline=False)}\n"
            "remedy: this is a bug in vigil; run again with --debug and report the output.\n"
        )
        sys.exit(int(ExitCode.INTERNAL))


if __name__ == "__main__":
    main()
