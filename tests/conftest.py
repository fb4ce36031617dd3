import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dir(tmp_path_factory):
    """Every test run gets its own cache; downloads are never attempted."""
    cache = tmp_path_factory.mktemp("prunelab-data")
    old = os.environ.get("PRUNELAB_DATA")
    os.environ["PRUNELAB_DATA"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PRUNELAB_DATA", None)
    else:
        os.environ["PRUNELAB_DATA"] = old


@pytest.fixture(scope="session", autouse=True)
def shared_mirror():
    """The real MNIST in ../shared/data (where it exists) is the data mirror of every test, so the
    tests on real files run instead of skipping. A mirror the caller set is left alone."""
    if "PRUNELAB_DATA_MIRROR" in os.environ or not SHARED_DATA.is_dir():
        yield os.environ.get("PRUNELAB_DATA_MIRROR")
        return
    os.environ["PRUNELAB_DATA_MIRROR"] = str(SHARED_DATA)
    yield str(SHARED_DATA)
    os.environ.pop("PRUNELAB_DATA_MIRROR", None)


@pytest.fixture(scope="session")
def digits():
    from prunelab import load_dataset

    return load_dataset("digits")


class _Timeout(BaseException):
    """Raised by SIGALRM in :func:`run_cli_here` (a BaseException: no ``except Exception`` swallows it)."""


def run_cli_here(*args, env=None, timeout=300):
    """``prunelab ARGS`` through its real entry point, :func:`prunelab.cli.main`, in this process.

    It answers as tests/test_cli.py's ``run_cli`` (a subprocess) does: a ``CompletedProcess`` with
    the exit status ``main`` gives, its stdout and its stderr (an exception that escapes ``main`` is
    a traceback on stderr and status 1, as the interpreter prints it; a warning is printed as the
    interpreter would print it); a call still running after ``timeout`` seconds raises
    ``subprocess.TimeoutExpired``. Without the ~2 s of starting Python and importing torch a call.

    What a fresh process would not have is reset first: what the CLI opened and warned about, the
    modules trusted (restored after), the datasets and states held in memory. Use ``run_cli`` where
    the test needs a real process: signals, environment isolation, a process beside another.
    """
    import signal
    import subprocess
    import sys
    import traceback
    import warnings
    from contextlib import ExitStack
    from unittest import mock

    from click import formatting
    from click.testing import CliRunner

    from prunelab import cli, registry
    from prunelab.caches import CACHES

    full_env = {"CI": "1", "COLUMNS": "120", **(env or {})}
    for state in (cli._OPENED, cli._WARNED, CACHES.snapshots, CACHES.datasets):
        state.clear()
    trusted = set(registry._TRUSTED)
    registry._TRUSTED.clear()  # a fresh process trusts nothing it was not told to (a module trusted earlier in
    argv = sys.argv            # this pytest process, e.g. by a spec another test loaded, would leak in)
    code = 0

    def expired(signum, frame):
        raise _Timeout

    with ExitStack() as stack:
        out, err, _ = stack.enter_context(CliRunner().isolation(env=full_env))
        stack.enter_context(mock.patch.object(formatting, "FORCED_WIDTH", None))  # help as wide as COLUMNS says
        for module in (cli, sys.modules.get("prunelab.hep.cli")):  # the streams here are no terminal
            if module is not None:
                stack.enter_context(mock.patch.object(module.console, "_color_system", None))
                # as wide as this call's COLUMNS says, as a console made in a new process is (not the
                # width of whatever COLUMNS this process had when the module was imported)
                stack.enter_context(mock.patch.object(module.console, "_width", None))
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.resetwarnings()  # the interpreter's defaults, not pytest's
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(timeout)
        sys.argv = ["prunelab", *map(str, args)]
        try:
            cli.main()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"), as the interpreter answers it
                print(exc.code, file=sys.stderr)
                code = 1
        except _Timeout:
            raise subprocess.TimeoutExpired(["prunelab", *map(str, args)], timeout) from None
        except KeyboardInterrupt:  # the person running the tests
            raise
        except BaseException:  # noqa: BLE001 (what the interpreter does with it)
            traceback.print_exc()
            code = 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            sys.argv = argv
            registry._TRUSTED.clear()
            registry._TRUSTED.update(trusted)
            for w in caught:
                sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = (_text(stream.getvalue()) for stream in (out, err))
    CACHES.snapshots.clear()
    return subprocess.CompletedProcess(["prunelab", *map(str, args)], code, stdout, stderr)


def _text(data: bytes) -> str:
    """As ``subprocess.run(text=True)`` decodes: UTF-8, universal newlines."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


@pytest.fixture(scope="module")
def one_openmp_thread():
    """Every OpenMP runtime loaded (torch's, and scikit-learn's own copy) at one thread for a module's tests.

    The classifier two-sample test (HistGradientBoostingClassifier, 200 rounds) on the few thousand
    showers the tests compare spends its time entering and leaving OpenMP regions, one per split
    beside torch's threads: on this two-core machine one thread gave the same AUC to the last digit
    in a quarter of the wall time and a fifth of the CPU time. Tiny models train no slower on one.
    """
    import sklearn.ensemble  # noqa: F401 (loads its runtime)
    import torch  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield
