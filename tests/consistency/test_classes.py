"""Consistency classes and the routing registry."""

from __future__ import annotations

import copy
import pickle

import pytest

from consistency import ConsistencyClass, ConsistencyInputError, Registry, UnknownOperationType


class PlaceThing:
    pass


class PlaceFancyThing(PlaceThing):
    pass


class MoveThing:
    pass


def test_class_values_are_lowercase_names() -> None:
    assert [c.value for c in ConsistencyClass] == ["strong", "causal", "eventual"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("strong", ConsistencyClass.STRONG),
        ("CAUSAL", ConsistencyClass.CAUSAL),
        (" Eventual ", ConsistencyClass.EVENTUAL),
        (ConsistencyClass.STRONG, ConsistencyClass.STRONG),
    ],
)
def test_parse(raw: ConsistencyClass | str, expected: ConsistencyClass) -> None:
    assert ConsistencyClass.parse(raw) is expected


@pytest.mark.parametrize("raw", ["linearizable", "", 1, None])
def test_parse_rejects(raw: object) -> None:
    with pytest.raises(ConsistencyInputError, match="consistency class must be one of"):
        ConsistencyClass.parse(raw)  # type: ignore[arg-type]


def test_of_instance_type_and_name() -> None:
    reg = Registry({PlaceThing: ConsistencyClass.STRONG, "MoveThing": "eventual"})
    assert reg.of(PlaceThing()) is ConsistencyClass.STRONG
    assert reg.of(PlaceThing) is ConsistencyClass.STRONG
    assert reg.of("PlaceThing") is ConsistencyClass.STRONG
    assert reg.of(MoveThing()) is ConsistencyClass.EVENTUAL
    assert reg.of(MoveThing) is ConsistencyClass.EVENTUAL
    assert reg.of("MoveThing") is ConsistencyClass.EVENTUAL


def test_subclass_routes_like_base_unless_registered() -> None:
    reg = Registry({PlaceThing: ConsistencyClass.STRONG})
    assert reg.of(PlaceFancyThing()) is ConsistencyClass.STRONG
    reg.register(PlaceFancyThing, ConsistencyClass.CAUSAL)
    assert reg.of(PlaceFancyThing()) is ConsistencyClass.CAUSAL
    assert reg.of(PlaceThing()) is ConsistencyClass.STRONG


def test_unregistered_type_raises_clear_error() -> None:
    reg = Registry({PlaceThing: ConsistencyClass.STRONG})
    with pytest.raises(UnknownOperationType, match="MoveThing") as info:
        reg.of(MoveThing())
    assert info.value.op_type == "MoveThing"
    assert isinstance(info.value, ValueError)
    assert "register" in str(info.value)
    with pytest.raises(UnknownOperationType):
        reg.of("Nope")
    assert MoveThing not in reg
    assert PlaceThing in reg


def test_error_pickles_with_its_facts() -> None:
    err = pickle.loads(pickle.dumps(UnknownOperationType("Foo")))
    assert isinstance(err, UnknownOperationType)
    assert err.op_type == "Foo"
    assert str(err) == str(UnknownOperationType("Foo"))


def test_reregistering_replaces() -> None:
    reg = Registry({PlaceThing: ConsistencyClass.STRONG})
    reg.register(PlaceThing, "eventual")
    assert reg.of(PlaceThing) is ConsistencyClass.EVENTUAL
    assert len(reg) == 1


def test_copies_are_independent() -> None:
    base = Registry({PlaceThing: ConsistencyClass.STRONG})
    for other in (base.copy(), copy.copy(base), copy.deepcopy(base)):
        other.register(MoveThing, ConsistencyClass.EVENTUAL)
        other.register(PlaceThing, ConsistencyClass.CAUSAL)
        assert MoveThing not in base
        assert base.of(PlaceThing) is ConsistencyClass.STRONG


def test_unregister() -> None:
    reg = Registry({PlaceThing: ConsistencyClass.STRONG, "X": "causal"})
    reg.unregister(PlaceThing)
    reg.unregister("X")
    assert len(reg) == 0
    with pytest.raises(UnknownOperationType):
        reg.unregister(PlaceThing)


@pytest.mark.parametrize("bad", [PlaceThing(), 3, "", "   ", "a\nb", "x" * 300, None])
def test_register_rejects_non_types(bad: object) -> None:
    with pytest.raises(ConsistencyInputError):
        Registry().register(bad, ConsistencyClass.STRONG)  # type: ignore[arg-type]


def test_register_rejects_bad_class() -> None:
    with pytest.raises(ConsistencyInputError):
        Registry().register(PlaceThing, "sometimes")


def test_ambiguous_name_lookup() -> None:
    def make() -> type:
        class Dup:
            pass

        return Dup

    a, b = make(), make()
    reg = Registry({a: ConsistencyClass.STRONG, b: ConsistencyClass.EVENTUAL})
    with pytest.raises(ConsistencyInputError, match="ambiguous"):
        reg.of("Dup")
    assert reg.of(a) is ConsistencyClass.STRONG
    reg2 = Registry({a: ConsistencyClass.STRONG, b: ConsistencyClass.STRONG})
    assert reg2.of("Dup") is ConsistencyClass.STRONG


def test_repr_lists_entries() -> None:
    r = repr(Registry({PlaceThing: ConsistencyClass.STRONG}))
    assert "PlaceThing" in r
    assert "STRONG" in r
