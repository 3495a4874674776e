"""Recognising ``d[k] += v`` so that it can run as one atomic step.

Python runs ``d[k] += v`` as three calls: ``d.__getitem__(k)``, the in-place
operator on the value, then ``d.__setitem__(k, result)``. Another process can
write between the first and the last, and one of the two updates is lost.

`SharedDict.__getitem__` therefore looks at the instruction that called it.
When that instruction loads the target of an augmented assignment (compiled
as ``COPY 2; COPY 2; BINARY_SUBSCR`` on 3.11 to 3.13, and later followed by an
in-place ``BINARY_OP``, ``SWAP 3; SWAP 2; STORE_SUBSCR``), it returns a
`Target` instead of the value. The operator on a `Target` only records itself
as a `Pending` operation, which ``__setitem__`` then applies inside one write
transaction: read, operate, write. A plain ``y = d[k]`` never matches, so
``y += 1`` stays a local change.

The bytecode of each calling code object is analysed once and cached. The
calling frame's ``f_lasti`` may point at the load instruction or into its
inline cache when the interpreter has specialised it, so every offset up to
the next instruction counts.
"""

from __future__ import annotations

import dis
import operator
import sys
import warnings
from collections.abc import Callable
from types import CodeType
from typing import Any

# Loads whose evaluation can run no user code: for these the key's
# existence need not be checked before the operand is computed.
_SIMPLE_OPERANDS = frozenset(
    {
        "LOAD_CONST",
        "LOAD_SMALL_INT",
        "LOAD_FAST",
        "LOAD_FAST_CHECK",
        "LOAD_FAST_BORROW",
        "LOAD_DEREF",
        "LOAD_NAME",
        "LOAD_GLOBAL",
    }
)
_MAX_PLANS = 4096

# code object id -> (the code object, {offset: must check the key first})
_plans: dict[int, tuple[CodeType, dict[int, bool]]] = {}


def augmented_target(frame: Any) -> bool | None:
    """None unless `frame` is loading the target of ``x[k] op= v``; then
    whether the key must be checked before the operand runs."""
    code = frame.f_code
    entry = _plans.get(id(code))
    if entry is None or entry[0] is not code:
        entry = _plan(code)
    if not entry[1]:
        return None
    return entry[1].get(frame.f_lasti)


def _plan(code: CodeType) -> tuple[CodeType, dict[int, bool]]:
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    entry = (code, _augmented_loads(code))
    _plans[id(code)] = entry
    return entry


def _is_subscript_load(ins: dis.Instruction) -> bool:
    if ins.opname == "BINARY_SUBSCR":
        return True
    # 3.14 folds subscription into BINARY_OP.
    return ins.opname == "BINARY_OP" and ins.argrepr == "[]"


def _is_inplace_op(ins: dis.Instruction) -> bool:
    return ins.opname == "BINARY_OP" and ins.argrepr.endswith("=")


def _augmented_loads(code: CodeType) -> dict[int, bool]:
    found: dict[int, bool] = {}
    ins = list(dis.get_instructions(code))
    for i in range(2, len(ins) - 1):
        if not (
            _is_subscript_load(ins[i])
            and ins[i - 1].opname == "COPY"
            and ins[i - 1].arg == 2
            and ins[i - 2].opname == "COPY"
            and ins[i - 2].arg == 2
        ):
            continue
        end = _store_of(ins, i + 1)
        if end is None:
            continue
        simple = end == i + 2 and ins[i + 1].opname in _SIMPLE_OPERANDS
        for offset in range(ins[i].offset, ins[i + 1].offset, 2):
            found[offset] = not simple
    return found


def _store_of(ins: list[dis.Instruction], start: int) -> int | None:
    """The index of the in-place operator that stores back, or None."""
    for j in range(start, len(ins) - 3):
        if (
            _is_inplace_op(ins[j])
            and ins[j + 1].opname == "SWAP"
            and ins[j + 1].arg == 3
            and ins[j + 2].opname == "SWAP"
            and ins[j + 2].arg == 2
            and ins[j + 3].opname == "STORE_SUBSCR"
        ):
            return j
    return None


class Pending:
    """An in-place operation waiting to be applied by ``__setitem__``."""

    __slots__ = ("op", "operand")

    def __init__(self, op: Callable[[Any, Any], Any], operand: Any) -> None:
        self.op = op
        self.operand = operand

    def apply(self, value: Any) -> Any:
        return self.op(value, self.operand)


def _recorder(op: Callable[[Any, Any], Any]) -> Callable[[Target, Any], Pending]:
    def record(self: Target, operand: Any) -> Pending:
        return Pending(op, operand)

    record.__name__ = f"__{op.__name__}__"
    return record


class Target:
    """What ``d[k]`` gives to an augmented assignment: the operator on it
    records itself rather than computing anything."""

    __slots__ = ()

    __iadd__ = _recorder(operator.iadd)
    __isub__ = _recorder(operator.isub)
    __imul__ = _recorder(operator.imul)
    __itruediv__ = _recorder(operator.itruediv)
    __ifloordiv__ = _recorder(operator.ifloordiv)
    __imod__ = _recorder(operator.imod)
    __ipow__ = _recorder(operator.ipow)
    __ilshift__ = _recorder(operator.ilshift)
    __irshift__ = _recorder(operator.irshift)
    __iand__ = _recorder(operator.iand)
    __ior__ = _recorder(operator.ior)
    __ixor__ = _recorder(operator.ixor)
    __imatmul__ = _recorder(operator.imatmul)


TARGET = Target()


def _self_test() -> bool:
    class Probe:
        hit = False

        def __getitem__(self, key: object) -> object:
            Probe.hit = augmented_target(sys._getframe(1)) is not None
            return TARGET

        def __setitem__(self, key: object, value: object) -> None:
            pass

    probe: Any = Probe()
    probe["k"] += 1
    return Probe.hit


if not _self_test():  # pragma: no cover - only on an unknown interpreter
    warnings.warn(
        f"multinode cannot recognise d[k] += v on Python {sys.version.split()[0]}; "
        "in-place operators on shared dicts will not be atomic here",
        RuntimeWarning,
        stacklevel=2,
    )
