"""The scripts' shared start-up: one error line on a fresh line, a quiet console."""

import logging as py_logging
import sys
import types

import pytest
import tqdm

from jaxvision import cli


def test_error_starts_on_its_own_line_after_a_progress_bar(capsys):
    bar = tqdm.tqdm(total=10, desc="train", file=sys.stderr)
    bar.update(3)  # The bar's line is open: it ends with "\r...", not "\n".
    with pytest.raises(SystemExit) as exit_info:
        cli._fail("Saving checkpoint step 3 failed.")
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.split("\n")
    assert "error: Saving checkpoint step 3 failed." in lines


def _record(pathname, level, message="m", name="absl"):
    return py_logging.LogRecord(name, level, pathname, 1, message, None, None)


def test_console_shows_our_info_and_everyones_warnings_but_not_orbax_errors():
    console = cli._ConsoleFilter()
    assert console.filter(_record("/x/jaxvision/train.py", py_logging.INFO))
    assert not console.filter(_record("/x/orbax/checkpoint/manager.py", py_logging.INFO))
    assert console.filter(_record("/x/flax/core.py", py_logging.WARNING))
    assert console.filter(_record("/x/orbax/checkpoint/manager.py", py_logging.WARNING))
    # Orbax's reports of a failed save: the checkpointer's error line says it once.
    assert not console.filter(_record("/x/orbax/checkpoint/future.py", py_logging.ERROR))
    assert not console.filter(_record("/x/asyncio/base_events.py", py_logging.ERROR,
                                      "Task exception: coro=</x/orbax/serialize.py>", "asyncio"))
    gathering = ("_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture "
                 "exception=ValueError('Error writing in /run/checkpoints/40.orbax-checkpoint-tmp')>")
    assert not console.filter(_record("/x/asyncio/base_events.py", py_logging.ERROR, gathering,
                                      "asyncio"))
    assert console.filter(_record("/x/asyncio/base_events.py", py_logging.ERROR, "other", "asyncio"))


def test_only_the_leftovers_of_a_failed_save_are_kept_quiet(monkeypatch):
    shown = []
    monkeypatch.setattr(sys, "__unraisablehook__", shown.append)

    def unraisable(exc, obj=None):
        return types.SimpleNamespace(exc_value=exc, object=obj)

    cli._quiet_unraisable(unraisable(RuntimeError("Event loop is closed")))
    assert not shown
    other = unraisable(ValueError("a real problem"))
    cli._quiet_unraisable(other)
    assert shown == [other]
