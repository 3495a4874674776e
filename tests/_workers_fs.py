"""Run a test step in a forked child under other credentials.

CI runs as root, and root ignores file permissions, so the read-only and
shared-group tests fork, drop to an unprivileged uid and gid in the child, and
only then touch the store. The child sends back its result (or the exception
it raised, which multinode's errors allow since they pickle) through a pipe;
the parent waits a bounded time and kills a child that hangs.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

NOBODY = 65534


class ChildFailed(AssertionError):
    """The child raised; carries its traceback so the report shows it."""


def start_as(
    fn: Callable[..., Any],
    *args: Any,
    uid: int | None = None,
    gid: int | None = None,
    groups: Iterable[int] = (),
    umask: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Fork a child that drops to ``uid``/``gid`` (with supplementary
    ``groups``), sets ``umask`` and ``env``, then runs ``fn(*args)``.

    Returns ``(pid, read end of the result pipe)`` for `finish`.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            try:
                # Order matters: groups and gid can only change while root.
                if uid is not None or gid is not None:
                    os.setgroups(list(groups))
                if gid is not None:
                    os.setgid(gid)
                if uid is not None:
                    os.setuid(uid)
                if umask is not None:
                    os.umask(umask)
                if env:
                    os.environ.update(env)
                outcome: tuple[str, Any] = ("ok", fn(*args))
            except BaseException as e:
                outcome = ("err", (type(e).__name__, str(e), traceback.format_exc()))
            with os.fdopen(w, "wb") as out:
                pickle.dump(outcome, out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def finish(pid: int, r: int, *, timeout: float = 60.0) -> Any:
    """Wait at most ``timeout`` seconds for the child of `start_as` and
    return what its function returned; raise `ChildFailed` if it raised,
    hung or died."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ChildFailed(f"child {pid} still running after {timeout} s")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not data:
        raise ChildFailed(f"child {pid} died without a result (status {status})")
    kind, value = pickle.loads(data)
    if kind == "err":
        name, message, tb = value
        raise ChildFailed(f"child raised {name}: {message}\n{tb}")
    return value


def run_as(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """`start_as` then `finish`, with the default bound."""
    pid, r = start_as(fn, *args, **kw)
    return finish(pid, r)
