"""`arpu` processes for the tests, forked from one that has already imported arpu.

Each `arpu` a test runs is a real process: its own pid, environment, working folder, stdout,
stderr and exit status; it dies of its faults' SIGKILL and exits as a user's would (atexit,
interpreter shutdown). Only its imports are done once: a Python that starts `arpu` spends about
0.4 s importing typer, pydantic, sqlglot, DuckDB and arpu's modules before any work, and the
suite starts about 200 of them. The zygote, started once per pytest process, imports all that
once and forks a child per command; the child runs `runner.cli` as `python -m runner.cli`
does. (`arpu ls` on the sample: 0.39 s started, 0.10 s forked.)

Tests that are about start-up itself (what `arpu --help` imports, how fast it answers), the
ones that signal a running build and a command whose environment changes how Python starts
(PYTHONPATH, say: a missing extra) start a plain `python -m runner.cli`. `ARPU_TESTS_FORK=0`
makes every command a plain one.

Protocol, one JSON object a line: the client writes {"args", "cwd", "env", "stdout", "stderr"};
the zygote answers {"pid"} once the child is forked and {"pid", "returncode"} when it ends
(the child's fds 1 and 2 are the files named, its stdin is /dev/null)."""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# -- the zygote (a process of its own: `python zygote.py`) ---------------------------------------
def _preload() -> None:
    """What commands import, without running any: arpu's modules (cli.py itself is run afresh
    by each child, as `-m` runs it). Not Great Expectations: a child of a zygote holding it
    takes 0.1 s longer to exit, more than the seven commands that import it would save."""
    import importlib
    import pkgutil

    import runner

    for module in pkgutil.walk_packages(runner.__path__, "runner."):
        if module.name != "runner.cli":
            importlib.import_module(module.name)
    importlib.import_module("runner.cli")
    for name in ("rich.console", "rich.status", "rich.table", "rich.progress"):
        importlib.import_module(name)
    del sys.modules["runner.cli"]
    del runner.cli  # type: ignore[attr-defined]


def _serve() -> dict[str, Any]:
    """Fork a child per request; report each child's end. Returns (in the child) its request."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pending = b""
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 512)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                _say({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})
        if 0 not in ready:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:  # the pytest process is gone
            os._exit(0)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.close(wake_r)
                os.close(wake_w)
                return request  # type: ignore[no-any-return]
            children.add(pid)
            _say({"pid": pid})


def _say(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _become(request: dict[str, Any]) -> None:
    """This forked child becomes `python -m runner.cli args...` in the request's folder and
    environment, its output in the request's files."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]
    sys.argv = ["arpu", *request["args"]]


# -- the client (in each pytest process) ---------------------------------------------------------
class Zygote:
    """The pytest process's zygote: `run` is `subprocess.run(capture_output=True, text=True)`
    for an `arpu` command."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(HERE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=HERE.parents[2])
        self._outputs = Path(tempfile.mkdtemp(prefix="arpu-zygote-"))
        atexit.register(shutil.rmtree, self._outputs, ignore_errors=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._runs = 0
        self._forked: list[int] = []
        self._ended: dict[int, int] = {}
        self._dead = False  # the zygote ended: nothing it forked will be reported
        self._reader = threading.Thread(target=self._read, name="arpu-zygote", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            with self._changed:
                if "returncode" in message:
                    self._ended[message["pid"]] = message["returncode"]
                else:
                    self._forked.append(message["pid"])
                self._changed.notify_all()
        with self._changed:  # the zygote died: nobody waits forever
            self._dead = True
            self._changed.notify_all()

    def _check_alive(self) -> None:
        if self._dead:
            raise RuntimeError(f"the arpu zygote died (exit {self._process.poll()})")

    def _wait_for(self, predicate: Any, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def run(self, args: list[str], cwd: Path | str, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        with self._lock:
            self._runs += 1
            n = self._runs
            out, err = self._outputs / f"{n}.out", self._outputs / f"{n}.err"
            out.touch()
            err.touch()
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out),
                       "stderr": str(err)}
            assert self._process.stdin is not None
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            if not self._wait_for(lambda: self._forked or self._dead, 60):
                raise RuntimeError("the arpu zygote did not fork in 60 s")
            with self._changed:
                if not self._forked:
                    self._check_alive()
                pid = self._forked.pop(0)
        if not self._wait_for(lambda: pid in self._ended or self._dead, timeout):
            os.kill(pid, signal.SIGKILL)
            self._wait_for(lambda: pid in self._ended or self._dead, 10)
            raise subprocess.TimeoutExpired(["arpu", *args], timeout, out.read_text(),
                                            err.read_text())
        with self._changed:
            if pid not in self._ended:
                self._check_alive()
            code = self._ended.pop(pid)
        done = subprocess.CompletedProcess(["arpu", *args], code, out.read_text(),
                                           err.read_text())
        out.unlink()
        err.unlink()
        return done


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def run_cli(args: list[str], cwd: Path | str, env: dict[str, str], timeout: float
            ) -> subprocess.CompletedProcess[str]:
    """`python -m runner.cli args...` in `cwd` with exactly `env`, as `subprocess.run` with
    captured text output would run it (forked from this process's zygote)."""
    global _zygote
    if os.environ.get("ARPU_TESTS_FORK") == "0" or _python_settings(env) != _python_settings(
            os.environ):  # PYTHONPATH and the like act as Python starts: a zygote is started

        return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    with _zygote_lock:
        if _zygote is None:  # forks of a Python started with this process's settings
            _zygote = Zygote()
    return _zygote.run(args, cwd, env, timeout)


def _python_settings(env: Any) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


if __name__ == "__main__":
    sys.path[0] = str(HERE.parents[2])  # the project (runner/), as from its root
    _preload()
    import gc

    gc.collect()
    gc.freeze()  # what the zygote imported stays out of its children's collections (without
    # it, each child's first collections copy the zygote's memory: `arpu ls` took 1.0 s, 0.1 s)
    _become(_serve())
    import runpy

    runpy.run_module("runner.cli", run_name="__main__", alter_sys=True)
