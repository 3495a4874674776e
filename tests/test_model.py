"""SharedDict against a plain dict: the model is the test.

A hypothesis state machine applies the same random operations to a
`SharedDict` and to a `dict` and demands the same results, exceptions, order
and lengths. Keys come from a bundle so they repeat, and cover every key type
including equal keys of different types (1, 1.0, True; 0, 0.0, -0.0, False)
whose first-stored form must survive. Further handles, from the same `Store`
and from a second `Store` on the same file, must agree with the model too.
Runs in both journal modes with both serializers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _workers_core import strict_equal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import multinode as mn

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- keys ---------------------------------------------------------------------

EQUAL_FAMILIES: list[Any] = [
    0, 0.0, -0.0, False, 1, 1.0, True, 2**53, float(2**53), 2**64, float(2**64),
    10**20, 1e20, (1,), (1.0,), (True,), (0, (False,)), (0.0, (-0.0,)), "", b"",
    (), ((),), None, (None,), int(1e300), 1e300, 2**1023, float(2**1023),
    -(2**64), float(-(2**64)), (0.5, True), (0.5, 1.0), float("inf"),
]  # fmt: skip

ODD_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "é",
    "e\u0301",
    "x" * 200,
]

scalar_keys = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=6),
    st.sampled_from(ODD_STRINGS),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**200, -(2**200), 10**50]),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=6),
    st.none(),
    st.sampled_from(EQUAL_FAMILIES),
)
key_strategy = st.recursive(
    scalar_keys,
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=5,
)

# --- values -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
    st.text(max_size=5),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
pickle_values = st.recursive(
    json_scalars
    | st.binary(max_size=5)
    | st.sampled_from([float("inf"), float("-inf"), -0.0, 2**200, 1j])
    | st.frozensets(st.integers(0, 5), max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.sets(st.integers(0, 9), max_size=3)
    ),
    max_leaves=6,
)
number_values = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-100, 100).map(float),
    st.booleans(),
    st.floats(-1e6, 1e6),
)
VALUES = {"json": json_values, "pickle": pickle_values}
KW_NAMES = st.sampled_from(["a", "b", "k", "new_value", "expected_current_value"])

_counter = itertools.count()


def _variant(v: Any) -> Any:
    """An equal value of another type, where one exists."""
    if type(v) is bool:
        return int(v)
    if type(v) is int and abs(v) < 2**53:
        return float(v)
    if type(v) is float and v.is_integer():
        return int(v)
    return v


def make_machine(base: Path, journal_mode: str, serializer: str) -> type:
    """A state machine class for one journal mode and serializer."""
    values = VALUES[serializer]

    class DictMachine(RuleBasedStateMachine):
        keys = Bundle("keys")
        any_key = st.one_of(keys, key_strategy)

        def __init__(self) -> None:
            super().__init__()
            self.path = base / f"model-{next(_counter)}.db"
            self.store = mn.Store(self.path, journal_mode=journal_mode)
            self.stores = [self.store]
            self.name = "model"
            self.d = self.store.get_dict(self.name, serializer=serializer)
            self.handles = [self.d]
            self.items_view = self.d.items()
            self.model: dict[Any, Any] = {}

        def teardown(self) -> None:
            for s in self.stores:
                s.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

        # --- helpers -----------------------------------------------------------

        def both(self, op: Callable[[Any], Any]) -> Any:
            """Apply op to the model and to the dict; demand the same outcome."""
            try:
                want = op(self.model)
            except Exception as exc:
                with pytest.raises(type(exc)):
                    op(self.d)
                return None
            got = op(self.d)
            assert strict_equal(got, want), f"{got!r} != {want!r}"
            return got

        def agree(self, d: mn.SharedDict) -> None:
            """A handle's whole content equals the model, in order."""
            assert len(d) == len(self.model)
            assert strict_equal(list(d.items()), list(self.model.items()))

        # --- keys --------------------------------------------------------------

        @initialize(target=keys, ks=st.lists(key_strategy, min_size=1, max_size=4))
        def seed_keys(self, ks: list[Any]) -> Any:
            return multiple(*ks)

        @rule(target=keys, k=key_strategy)
        def new_key(self, k: Any) -> Any:
            return k

        @rule(target=keys, k=st.sampled_from(EQUAL_FAMILIES))
        def equal_family_key(self, k: Any) -> Any:
            return k

        # --- single-key operations ---------------------------------------------

        @rule(k=any_key, v=values)
        def setitem(self, k: Any, v: Any) -> None:
            self.d[k] = v
            self.model[k] = v

        @rule(k=any_key, v=number_values)
        def set_number(self, k: Any, v: Any) -> None:
            self.d[k] = v
            self.model[k] = v

        @rule(k=any_key)
        def getitem(self, k: Any) -> None:
            if k in self.model:
                assert strict_equal(self.d[k], self.model[k])
            else:
                with pytest.raises(KeyError) as info:
                    self.d[k]
                assert info.value.args[0] == k

        @rule(k=any_key)
        def delitem(self, k: Any) -> None:
            def op(m: Any) -> None:
                del m[k]

            self.both(op)

        @rule(k=any_key, v=values)
        def contains(self, k: Any, v: Any) -> None:
            assert (k in self.d) == (k in self.model)
            assert (k in self.d.keys()) == (k in self.model)  # noqa: SIM118
            assert ((k, v) in self.d.items()) == ((k, v) in self.model.items())

        @rule(k=any_key, default=st.none() | values)
        def get(self, k: Any, default: Any) -> None:
            self.both(lambda m: m.get(k))
            self.both(lambda m: m.get(k, default))

        @rule(k=any_key)
        def pop(self, k: Any) -> None:
            self.both(lambda m: m.pop(k))

        @rule(k=any_key, default=values)
        def pop_default(self, k: Any, default: Any) -> None:
            self.both(lambda m: m.pop(k, default))

        @rule()
        def popitem(self) -> None:
            self.both(lambda m: m.popitem())

        @rule(k=any_key, v=values, omit=st.booleans())
        def setdefault(self, k: Any, v: Any, omit: bool) -> None:
            if omit:
                self.both(lambda m: m.setdefault(k))
            else:
                self.both(lambda m: m.setdefault(k, v))

        @rule(k=any_key, n=st.integers(-5, 5))
        def iadd(self, k: Any, n: int) -> None:
            def op(m: Any) -> None:
                m[k] += n

            self.both(op)

        @rule(k=any_key, v=values)
        def set_if_absent(self, k: Any, v: Any) -> None:
            want = k not in self.model
            assert self.d.set_if_absent(k, value=v) is want
            if want:
                self.model[k] = v

        @rule(
            k=any_key,
            new=values,
            how=st.sampled_from(["current", "variant", "none", "random"]),
            other=values,
        )
        def cas(self, k: Any, new: Any, how: str, other: Any) -> None:
            present = k in self.model
            current = self.model.get(k)
            expected = {
                "current": current,
                "variant": _variant(current),
                "none": None,
                "random": other,
            }[how]
            want = present and bool(current == expected)
            got = self.d.update(k, new_value=new, expected_current_value=expected)
            assert got is want
            if want:
                self.model[k] = new

        # --- operations on keys known to be present ----------------------------

        def present(self, data: st.DataObject) -> Any:
            return data.draw(st.sampled_from(list(self.model)), label="present key")

        @precondition(lambda self: self.model)
        @rule(data=st.data(), n=st.integers(-5, 5), as_variant=st.booleans())
        def iadd_present(self, data: st.DataObject, n: int, as_variant: bool) -> None:
            k = self.present(data)
            k = _variant(k) if as_variant else k

            def op(m: Any) -> None:
                m[k] += n

            self.both(op)

        @precondition(lambda self: self.model)
        @rule(
            data=st.data(),
            new=values,
            how=st.sampled_from(["current", "variant", "variant-key", "other"]),
            other=values,
        )
        def cas_present(
            self, data: st.DataObject, new: Any, how: str, other: Any
        ) -> None:
            k = self.present(data)
            current = self.model[k]
            expected = {
                "current": current,
                "variant": _variant(current),
                "variant-key": current,
                "other": other,
            }[how]
            if how == "variant-key":
                k = _variant(k)
            want = bool(current == expected)
            got = self.d.update(k, new_value=new, expected_current_value=expected)
            assert got is want
            if want:
                self.model[k] = new

        def numeric_keys(self) -> list[Any]:
            return [k for k, v in self.model.items() if type(v) in (int, float, bool)]

        @precondition(lambda self: self.numeric_keys())
        @rule(data=st.data(), new=number_values, hit=st.booleans())
        def cas_numeric(self, data: st.DataObject, new: Any, hit: bool) -> None:
            """CAS with an equal value of another type (1 vs 1.0 vs True)."""
            k = data.draw(st.sampled_from(self.numeric_keys()), label="numeric key")
            current = self.model[k]
            expected = _variant(current) if hit else _variant(current) + 1
            want = bool(current == expected)
            got = self.d.update(k, new_value=new, expected_current_value=expected)
            assert got is want
            if want:
                self.model[k] = new

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def getitem_present(self, data: st.DataObject) -> None:
            k = self.present(data)
            assert strict_equal(self.d[_variant(k)], self.model[k])

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def delitem_present(self, data: st.DataObject) -> None:
            k = self.present(data)
            del self.d[_variant(k)]
            del self.model[k]

        # --- whole-dict operations ---------------------------------------------

        @precondition(lambda self: len(self.model) >= 4)
        @rule()
        def clear(self) -> None:
            self.d.clear()
            self.model.clear()

        @rule(pairs=st.lists(st.tuples(any_key, values), max_size=4))
        def update_mapping(self, pairs: list[tuple[Any, Any]]) -> None:
            mapping = dict(pairs)
            assert self.d.update(mapping) is None
            self.model.update(mapping)

        @rule(
            pairs=st.lists(st.tuples(any_key, values), max_size=4),
            as_iter=st.booleans(),
        )
        def update_pairs(self, pairs: list[tuple[Any, Any]], as_iter: bool) -> None:
            assert self.d.update(iter(pairs) if as_iter else pairs) is None
            self.model.update(pairs)

        @rule(kw=st.dictionaries(KW_NAMES, values, max_size=3))
        def update_kwargs(self, kw: dict[str, Any]) -> None:
            assert self.d.update(**kw) is None
            self.model.update(**kw)

        @rule()
        def copy(self) -> None:
            c = self.d.copy()
            assert type(c) is dict
            assert strict_equal(c, self.model)

        @rule(k=any_key)
        def equality(self, k: Any) -> None:
            assert self.d == self.model
            assert (self.d != self.model) is False
            assert self.d == dict(self.model)
            other = dict(self.model)
            if k in other:
                del other[k]
            else:
                other[k] = 0
            assert self.d != other
            assert (self.d == {}) == (not self.model)

        @rule()
        def iterate(self) -> None:
            assert strict_equal(list(iter(self.d)), list(self.model))
            assert strict_equal(list(self.d.keys()), list(self.model.keys()))
            assert strict_equal(list(self.d.values()), list(self.model.values()))
            assert strict_equal(list(self.d.items()), list(self.model.items()))

        @rule(data=st.data(), first=st.integers(1, 3))
        def iterate_while_writing(self, data: st.DataObject, first: int) -> None:
            """Writes between steps of an iterator: no error; every key that
            stayed present comes once; no key inserted meanwhile comes.

            Iteration begins at the first ``next()``, as for any generator."""
            start = list(self.model)
            it = iter(self.d)
            got = list(itertools.islice(it, first))
            touched: list[Any] = []
            inserted: list[Any] = []
            for _ in range(data.draw(st.integers(0, 3), label="writes")):
                how = data.draw(st.sampled_from(["new", "del", "replace"]))
                if how == "new":
                    k = data.draw(key_strategy, label="new key")
                    if k not in self.model:
                        inserted.append(k)
                    self.d[k] = 0
                    self.model[k] = 0
                elif self.model:
                    k = self.present(data)
                    if how == "del":
                        touched.append(k)
                        del self.d[k]
                        del self.model[k]
                    else:
                        self.d[k] = 1
                        self.model[k] = 1
            got.extend(it)
            assert len(got) == len(set(got)), f"a key came twice: {got!r}"
            assert set(got) <= set(start), f"a key inserted meanwhile: {got!r}"
            stayed = [k for k in start if k not in touched and k not in inserted]
            assert set(stayed) <= set(got)
            assert strict_equal([k for k in got if k in stayed], stayed)

        # --- more handles --------------------------------------------------------

        @precondition(lambda self: len(self.handles) < 5)
        @rule()
        def reopen_same_store(self) -> None:
            h = self.store.get_dict(self.name)
            assert h.serializer == serializer
            self.agree(h)
            self.handles.append(h)

        @precondition(lambda self: len(self.stores) < 3)
        @rule()
        def open_second_store(self) -> None:
            s = mn.Store(self.path)
            self.stores.append(s)
            assert s.journal_mode == journal_mode
            h = s.get_dict(self.name)
            assert h.serializer == serializer
            self.agree(h)
            self.handles.append(h)

        @precondition(lambda self: len(self.stores) > 1)
        @rule()
        def close_second_store(self) -> None:
            s = self.stores.pop()
            self.handles = [h for h in self.handles if h.store is not s]
            if not any(h is self.d for h in self.handles):
                self.d = self.handles[0]
            s.close()
            self.agree(self.d)
            self.agree(self.handles[0])

        @rule(i=st.integers(0, 7))
        def switch_handle(self, i: int) -> None:
            self.d = self.handles[i % len(self.handles)]

        # --- invariants ----------------------------------------------------------

        @invariant()
        def length_and_truth(self) -> None:
            assert len(self.d) == len(self.model)
            assert bool(self.d) == bool(self.model)

        @invariant()
        def order(self) -> None:
            assert strict_equal(list(self.d), list(self.model))

        @invariant()
        def handles_agree(self) -> None:
            for h in self.handles:
                self.agree(h)

        @invariant()
        def live_view(self) -> None:
            assert strict_equal(list(self.items_view), list(self.model.items()))
            assert len(self.items_view) == len(self.model)

    return DictMachine


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_shared_dict_behaves_like_dict(
    tmp_path: Path, journal_mode: str, serializer: str
) -> None:
    """Random operation sequences give the same results on SharedDict (any
    handle, any Store on the file) as on a plain dict."""
    machine = make_machine(tmp_path, journal_mode, serializer)
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_keys_of_any_int_size(store: mn.Store) -> None:
    """Ints far beyond 64 bits (and beyond str()'s digit limit) are keys,
    distinct from their neighbours, read back exactly by another Store."""
    d = store.get_dict("huge")
    keys = [10**5000, 10**5000 + 1, -(10**5000), (10**5000, 2**100), 2**20000]
    for i, k in enumerate(keys):
        d[k] = i
    with mn.Store(store.path) as other:
        got = list(other.get_dict("huge").items())
    assert got == [(k, i) for i, k in enumerate(keys)]
    assert all(type(a) is type(b) for (a, _), b in zip(got, keys, strict=True))
    assert d[10**5000 + 1] == 1


def test_repr_names_dict_and_store_not_items(tmp_path: Path) -> None:
    """repr() names the dict and the store and never dumps the items."""
    with mn.Store(tmp_path / "r.db") as store:
        d = store.get_dict("big one")
        d.update((f"key{i}", "v" * 50) for i in range(2000))
        r = repr(d)
        assert "big one" in r
        assert str(tmp_path / "r.db") in r
        assert "key1" not in r
        assert len(r) < 500


def test_equality_with_non_mappings(store: mn.Store) -> None:
    """``==`` is False against anything that is not an equal mapping."""
    d = store.get_dict("eq")
    d.update(a=1)
    assert d == {"a": 1}
    assert d == store.get_dict("eq")
    assert d != [("a", 1)]
    assert d != 1
    assert d != {"a": 1.5}
    assert d != {"a": 1, "b": 2}
    assert (d == {"a": 1.0}) is True  # equal values, as for dict


def test_dict_operators_beyond_mutablemapping(store: mn.Store) -> None:
    """Where DESIGN is silent, what a dict does: ``reversed(d)``, ``d | m``,
    ``m | d`` (plain dicts) and ``d |= m`` (an update in place)."""
    d = store.get_dict("ops")
    d.update(a=1, b=2)
    ref = {"a": 1, "b": 2}
    assert list(reversed(d)) == list(reversed(ref))
    assert (d | {"c": 3}) == (ref | {"c": 3})
    assert type(d | {"c": 3}) is dict
    assert ({"c": 3} | d) == ({"c": 3} | ref)
    same = d
    d |= {"b": 5, "c": 6}
    assert d is same
    assert d.copy() == {"a": 1, "b": 5, "c": 6}
