"""Bad input gets a clear error and changes nothing.

Hypothesis generates dict names, keys that cannot be keys, and values JSON
cannot carry; each must either work exactly or be refused before anything is
written.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multinode as mn

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[mn.Store]:
    """One store for all of a test's examples."""
    with mn.Store(tmp_path / "s.db") as store:
        yield store


@SETTINGS
@given(names=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5))
def test_any_name_is_its_own_dict(shared: mn.Store, names: list[str]) -> None:
    """Every non-empty str is a valid name, and distinct names are distinct
    dicts (no case folding, no normalisation, no SQL)."""
    for name in names:
        shared.get_dict(name)["name"] = name
    for name in names:
        assert shared.get_dict(name)["name"] == name
    assert set(names) <= set(shared.dicts())
    assert shared.check() == []


class _Str(str):
    pass


class _Int(int):
    pass


_bad_keys = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(float("nan")),
    st.tuples(st.integers(), st.just(float("nan"))),
    st.tuples(st.integers(), st.lists(st.integers(), max_size=1)),
    st.complex_numbers(allow_nan=False),
    st.binary(max_size=3).map(bytearray),
    st.text(max_size=3).map(_Str),
    st.integers().map(_Int),
    st.builds(object),
)

_KEY_OPERATIONS: dict[str, Callable[[mn.SharedDict, Any], Any]] = {
    "getitem": lambda d, k: d[k],
    "setitem": lambda d, k: d.__setitem__(k, 1),
    "delitem": lambda d, k: d.__delitem__(k),
    "contains": lambda d, k: k in d,
    "get": lambda d, k: d.get(k),
    "pop": lambda d, k: d.pop(k, None),
    "setdefault": lambda d, k: d.setdefault(k, 1),
    "set_if_absent": lambda d, k: d.set_if_absent(k, value=1),
    "cas": lambda d, k: d.update(k, new_value=1, expected_current_value=0),
    "update": lambda d, k: d.update([("ok", 1), (k, 1)]),
}


@SETTINGS
@given(key=_bad_keys, operation=st.sampled_from(sorted(_KEY_OPERATIONS)))
def test_unsupported_keys_are_refused_and_change_nothing(
    shared: mn.Store, key: Any, operation: str
) -> None:
    """A key of an unsupported type, a subclass or NaN raises
    UnsupportedKeyError (a TypeError and a ValueError) naming the type and
    the dict, from every method, and the dict is as it was."""
    d = shared.get_dict("d")
    d.clear()
    d["kept"] = 0
    with pytest.raises(mn.UnsupportedKeyError) as info:
        _KEY_OPERATIONS[operation](d, key)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert "'d'" in str(info.value)
    assert d.copy() == {"kept": 0}


def _json_exact(value: Any) -> bool:
    """Whether `value` comes back from JSON equal and of the same types."""
    if value is None or type(value) in (str, int, bool):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(_json_exact(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=2)
    ),
    max_leaves=8,
)


@SETTINGS
@given(value=_values)
def test_json_dicts_store_exactly_or_refuse(shared: mn.Store, value: Any) -> None:
    """With serializer="json", a value either round-trips equal and of the
    same types, or is refused before anything is written."""
    d = shared.get_dict("j", serializer="json")
    d.clear()
    if _json_exact(value):
        d["v"] = value
        back = d["v"]
        assert json.dumps(back) == json.dumps(value)
        assert type(back) is type(value)
    else:
        with pytest.raises(mn.UnsupportedValueError):
            d["v"] = value
        with pytest.raises(mn.UnsupportedValueError):
            d.update({"a": 1, "v": value})
        assert "v" not in d and "a" not in d and len(d) == 0


@pytest.mark.parametrize(
    "value",
    [lambda: None, threading.Lock(), (x for x in [1])],
    ids=["lambda", "lock", "generator"],
)
def test_unpicklable_values_are_refused_and_change_nothing(
    store: mn.Store, value: Any
) -> None:
    """A value pickle cannot store raises UnsupportedValueError naming its
    type, before anything is written; an existing value is kept."""
    d = store.get_dict("d")
    d["k"] = "old"
    for write in (
        lambda: d.__setitem__("k", value),
        lambda: d.update({"other": 1, "k": value}),
        lambda: d.set_if_absent("new", value=value),
        lambda: d.update("k", new_value=value, expected_current_value="old"),
    ):
        with pytest.raises(mn.UnsupportedValueError, match=type(value).__name__):
            write()
    assert d.copy() == {"k": "old"}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: mn.Store(p, timeout="soon"), TypeError),
        (lambda p: mn.Store(p, timeout=0), ValueError),
        (lambda p: mn.Store(p, journal_mode="memory"), ValueError),
        (lambda p: mn.Store(p, durability="paranoid"), ValueError),
        (lambda p: mn.Store(42), TypeError),
        (lambda p: mn.Store(p).get_dict(b"bytes"), TypeError),
        (lambda p: mn.Store(p).get_dict(""), ValueError),
        (lambda p: mn.Store(p).get_dict("x", serializer="yaml"), ValueError),
        (lambda p: mn.Store(p).delete_dict("missing"), KeyError),
        (lambda p: mn.Store(p).get_dict("x").update(1, 2), TypeError),
        (lambda p: mn.Store(p).get_dict("x").update([(1, 2, 3)]), ValueError),
        (lambda p: mn.Store(p).get_dict("x").set_if_absent("k"), TypeError),
    ],
)
def test_wrong_arguments_get_the_builtin_error(
    tmp_path: Path, call: Callable[[Path], Any], error: type[Exception]
) -> None:
    """Wrong argument types and values raise the builtin error a Python
    programmer expects, with the bad value in the message where there is one."""
    with pytest.raises(error):
        call(tmp_path / "s.db")
