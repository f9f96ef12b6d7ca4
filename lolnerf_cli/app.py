"""The Typer application object, the terminal (rich) and the error -> exit-code policy.

Only the CLI layer prints or exits. Every command body runs inside `guarded()`, which turns
`InputError` into one line on stderr with exit 2, `LolnerfError` into one line with exit 1, and any
other exception into one line with exit 1 (the traceback only with --debug)."""

from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import typer
import typer.core
from rich.console import Console, ConsoleDimensions
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from . import progress as _progress
from .errors import InputError, LolnerfError, ParamError

app = typer.Typer(
    name="lolnerf",
    help="Learn a 3D generative model of an object class from single-view photos (LOLNeRF).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
PLAIN_WIDTH = 100_000   # off a terminal every line is as long as its content: nothing wraps or is cut


class _Console(Console):
    """rich's Console, except off a terminal (a log file, a pipe, CI): there it is PLAIN_WIDTH columns
    wide, so paths, echoed commands and table cells are never wrapped at 80 columns or cut with "…".
    A COLUMNS variable in the environment (CI systems and pytest set one) does not change that; a width
    given to the constructor does."""

    _fixed_width = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fixed_width = kwargs.get("width") is not None

    @property
    def size(self) -> ConsoleDimensions:
        real = super().size
        if not self._fixed_width and not self.is_terminal and not self.is_jupyter:
            return ConsoleDimensions(PLAIN_WIDTH, real.height)
        return real

    @size.setter
    def size(self, new_size) -> None:
        self._width, self._height = new_size
        self._fixed_width = True


console = _Console(stderr=False, highlight=False)
err_console = _Console(stderr=True, highlight=False)


def heading(text: str) -> None:
    """A section heading: a rule across a terminal; off a terminal a plain line (a rule would be PLAIN_WIDTH
    characters long there)."""
    if console.is_terminal:
        console.rule(f"[bold]{_escape(text)}")
    else:
        console.print(f"=== {text} ===", markup=False, highlight=False)


def _hide_flag_types() -> None:
    """typer 0.29 prints a value type such as `<bool>` after every option in --help, on/off flags (and
    --help itself) included, although a flag takes no value. Show nothing there for flags."""
    option = getattr(typer.core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if original is None or getattr(original, "_lolnerf", False):   # another typer, or already done
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._lolnerf = True
    option.display_type_rich = display_type_rich


_hide_flag_types()

STATE = {"debug": bool(os.environ.get("LOLNERF_DEBUG"))}


def fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code)


# Library parameters whose command-line flag is not "--" + the name with "-" for "_".
FLAG_NAMES = {"latent_file": "--latent", "flag_fraction": "--flag-threshold", "fmt": "--format",
              "views": "holdout views", "config_overrides": "--sampler/--set"}


def flag_for(param: str) -> str:
    """The command-line flag of a library parameter (ParamError names parameters, commands show flags)."""
    return FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


def guarded(fn):
    """Decorator for command bodies: the project's error policy in one place."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except InputError as exc:
            if STATE["debug"]:
                err_console.print_exception()
            fail(_escape(str(exc.as_flags(flag_for) if isinstance(exc, ParamError) else exc)), 2)
        except LolnerfError as exc:
            if STATE["debug"]:
                err_console.print_exception()
            fail(_escape(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted.")
            raise typer.Exit(130)
        except MemoryError:
            fail("out of memory; try a smaller --resolution, preset or batch.", 1)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
            if STATE["debug"]:
                err_console.print_exception()
                raise typer.Exit(1)
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(_escape(f"internal error ({type(exc).__name__}: {first}); run again with --debug for details"), 1)

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _plain_interval() -> float:
    """Seconds between plain progress lines off a terminal (LOLNERF_PROGRESS_INTERVAL, default 30)."""
    try:
        return max(0.0, float(os.environ.get("LOLNERF_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


class _RichTask(_progress.Task):
    """Drives a rich bar on a terminal; off a terminal prints a plain line at a steady interval."""

    def __init__(self, bar: RichProgress, task_id, plain_console: Console | None = None,
                 description: str = "", total: int | None = None):
        self.bar, self.id = bar, task_id
        self.plain, self.description, self.total = plain_console, description, total
        self.done, self.fields = 0, {}
        self.before = 0                  # units done by an earlier session (resume_from)
        self.t0 = self.last = time.time()
        self.interval = _plain_interval()

    def advance(self, n: int = 1, **fields) -> None:
        self.bar.update(self.id, advance=n, info=_fmt(fields) if fields else None) if fields else \
            self.bar.advance(self.id, n)
        self.done += n
        self.fields.update(fields)
        self._maybe_line()

    def update(self, **fields) -> None:
        self.bar.update(self.id, info=_fmt(fields))
        self.fields.update(fields)
        self._maybe_line()

    def resume_from(self, done: int) -> None:
        self.bar.reset(self.id, total=self.total, completed=done)   # rich forgets its speed samples
        self.done = self.before = done
        self.t0 = time.time()

    def line(self) -> str:
        elapsed = time.time() - self.t0
        parts = [f"{self.description}: {self.done}" + (f"/{self.total}" if self.total else "")]
        if self.fields:
            parts.append(_fmt(self.fields))
        parts.append(f"elapsed {elapsed:.0f} s")
        if self.total and self.done > self.before:
            rate = (self.done - self.before) / max(elapsed, 1e-9)
            parts.append(f"eta {max(0, self.total - self.done) / rate:.0f} s")
        return "  ".join(parts)

    def _maybe_line(self) -> None:
        if self.plain is None:
            return
        now = time.time()
        if now - self.last >= self.interval:
            self.last = now
            self.plain.print(self.line(), soft_wrap=True, markup=False, highlight=False)


def _fmt(fields: dict) -> str:
    parts = []
    for k, v in fields.items():
        if isinstance(v, float):
            v = f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        parts.append(f"{k} {v}")
    return "  ".join(parts)


class RichProgressReporter(_progress.Progress):
    """Rich progress bars on stderr; quiet (log lines only) when stderr is not a terminal."""

    def __init__(self, console: Console | None = None):
        self.console = console or err_console

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_progress.Task]:
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        with RichProgress(*columns, console=self.console, transient=False,
                          disable=not self.console.is_terminal) as bar:
            tid = bar.add_task(description, total=total, info="")
            t0 = time.time()
            plain = None if self.console.is_terminal else self.console
            task = _RichTask(bar, tid, plain, description, total)
            if plain is not None:
                plain.print(f"{description}: started" + (f" ({total} steps)" if total else ""),
                            soft_wrap=True, markup=False, highlight=False)
            yield task
        if not self.console.is_terminal:
            self.console.print(f"{task.line()}" if task.fields else f"{description}: {task.done}"
                               + (f"/{total}" if total else ""), soft_wrap=True, markup=False, highlight=False)
            self.console.print(f"{description}: done in {time.time() - t0:.1f} s")

    def log(self, message: str) -> None:
        self.console.print(message)


def reporter() -> RichProgressReporter:
    return RichProgressReporter()


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (also accepted after the "
                                                            "command: lolnerf train ... --debug)."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """lolnerf: a LOLNeRF toolkit (GLO latents + a latent-conditioned NeRF, cameras from landmarks)."""
    STATE["debug"] = STATE["debug"] or debug
    if version:
        from . import __version__

        console.print(f"lolnerf {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> None:
    from . import commands  # noqa: F401 - registers every subcommand

    app(args=_debug_anywhere(sys.argv[1:] if argv is None else list(argv)), prog_name="lolnerf")


def _debug_anywhere(args: list[str]) -> list[str]:
    """`--debug` is an option of `lolnerf` itself, so click accepts it only before the command; take it from
    anywhere before a `--` separator (`lolnerf train data/ --debug` works too)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[1:end]:
        return args
    STATE["debug"] = True
    return [a for i, a in enumerate(args) if not (a == "--debug" and 0 < i < end)]


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
