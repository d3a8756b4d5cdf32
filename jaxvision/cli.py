"""What every script in `scripts/` shares: flags, multi-process start-up, clean failures.

Bad input (a missing config file, an override of a config key that does not
exist, any `UserError` raised by the library) ends the script with one line
on stderr, no traceback and exit status 1. A training run stopped by SIGTERM or
SIGINT after saving its checkpoint exits with 128 + the signal (143, 130);
Ctrl-C elsewhere exits with 130 and no traceback. `--help` exits with 0.
"""

import logging as py_logging
import os
import signal
import sys
from collections.abc import Callable

import jax
import tqdm
from absl import app, flags, logging

from jaxvision import parallel, preemption
from jaxvision.errors import UserError

# Multi-process runs (one process per host). Under SLURM or Open MPI leave them
# unset: jax.distributed detects the cluster.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process, 0..num_processes-1.")
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", os.path.join("~", ".cache", "jaxvision", "xla"),
    "Persistent XLA compilation cache: a second run of the same config starts "
    "without recompiling. Empty: off.",
)
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds to wait for the other processes at start-up."
)


_HELP_FLAGS = ("-?", "-h", "--help", "--helpshort", "--helpfull", "--helpxml")


def _fail(message: str, exit_code: int = 1):
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        bar.close()  # Ends the progress bar's line, so the error starts on its own.
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_code)


def _config_path(argv: list[str]) -> str | None:
    """The config file named by `--config path[:arg]` or `--config=path[:arg]`."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        return value.split(":", 1)[0]
    return None


def _put_config_package_on_path(path: str):
    """Lets the config file at `path` import `configs.common` (`from configs import common`).

    config_flags loads the file by path, and sys.path[0] is the script's folder,
    so the folder holding the config's package goes first: the checkout root
    for `configs/X.py`. A config kept elsewhere (in no package) gets the
    `configs` package of the jaxvision checkout the scripts run from.
    """
    package = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(os.path.join(package, "__init__.py")):
        package = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
    root = os.path.dirname(package)
    if root not in sys.path:
        sys.path.insert(0, root)


def _parse_flags(argv: list[str]) -> list[str]:
    path = _config_path(argv)
    if path is not None:
        if not os.path.isfile(path):
            _fail(f"Config file {path!r} does not exist; pass an existing file such as "
                  "--config configs/digits_cnn.py.")
        _put_config_package_on_path(path)
    try:
        return flags.FLAGS(argv)
    except SystemExit:  # absl exits with 1 after printing the help it was asked for.
        if any(arg.split("=")[0] in _HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise
    except AttributeError as e:  # ml_collections: override of an unknown key.
        # The KeyError inside reads "'key'" or "'key'\nDid you mean "other"?".
        cause = e.args[0] if e.args and isinstance(e.args[0], KeyError) else e
        key, *hint = str(cause.args[0] if cause.args else cause).splitlines()
        hint = f" ({hint[0][0].lower()}{hint[0][1:]})" if hint else ""
        _fail(f"Config key {key} does not exist{hint}; check the spelling of your "
              f"--config.* overrides against {path}.")
    except flags.Error as e:
        _fail(f"{e}; see --helpfull for the flags.")
    except UserError as e:  # Raised by a config file's get_config().
        _fail(str(e))
    except ImportError as e:  # Raised by a config file's imports.
        fix = ("run the scripts of a jaxvision checkout, whose configs/ it imports"
               if (e.name or "").split(".")[0] == "configs" else "install what it imports")
        _fail(f"Config file {path!r}: {e}; {fix}.")


class _ConsoleFilter(py_logging.Filter):
    """What reaches the console: INFO lines from jaxvision and the running script
    (Orbax is chatty), and warnings from everywhere.

    Orbax's own error reports (tracebacks from its save threads) are left out:
    the checkpointer turns the failure into one `error:` line. `--verbosity=1`
    shows them.
    """

    def filter(self, record: py_logging.LogRecord) -> bool:
        if logging.get_verbosity() < 1 and (
            f"{os.sep}orbax{os.sep}" in record.pathname
            # Orbax's unfinished writes ("... exception was never retrieved"):
            # their coroutine or their .orbax-checkpoint-tmp folder names it.
            or (record.name == "asyncio" and "orbax" in record.getMessage())
        ):
            return record.levelno == py_logging.WARNING
        return (
            record.levelno >= py_logging.WARNING
            or f"{os.sep}jaxvision{os.sep}" in record.pathname
            or os.path.abspath(record.pathname) == os.path.abspath(sys.argv[0])
        )


def _quiet_unraisable(unraisable):
    """Drops the leftovers of a failed Orbax save; other unraisable errors print as usual.

    After a save fails, TensorStore still calls back into the event loop Orbax
    has closed, and Orbax's unfinished coroutines are collected at exit. Python
    reports both as errors it could not raise, with tracebacks that change
    nothing: the failure itself is the run's one `error:` line.
    """
    code = getattr(unraisable.object, "cr_code", None)
    if (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed") or (
            code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename):
        return
    sys.__unraisablehook__(unraisable)


def run(main: Callable[[list[str]], None]):
    """`absl.app.run(main)` that turns `UserError` into a one-line error."""

    def guarded_main(argv):
        logging.get_absl_handler().addFilter(_ConsoleFilter())
        if logging.get_verbosity() < 1:
            sys.unraisablehook = _quiet_unraisable
        if len(argv) > 1:
            _fail(f"Unexpected arguments {argv[1:]}; pass settings as --config.KEY=VALUE.")
        if _CACHE_DIR.value:
            jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE_DIR.value))
        try:
            parallel.initialize_distributed(
                _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                _TIMEOUT.value,
            )
            main(argv)
        except UserError as e:
            _fail(str(e))
        except preemption.Stopped as e:
            sys.exit(e.exit_code)  # The train loop logged where it saved.
        except KeyboardInterrupt:
            _fail("interrupted (Ctrl-C).", 128 + signal.SIGINT)

    app.run(guarded_main, flags_parser=_parse_flags)
