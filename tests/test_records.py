"""uffdctl/records.py: its NamedTuple and record() behave as typing.NamedTuple and
dataclass(eq=True) do, for what uffdctl's records use of them."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from uffdctl import records


class Plain(records.NamedTuple):
    """A docstring."""

    name: str
    size: int = 4
    tags: tuple[str, ...] = ()

    @property
    def big(self) -> bool:
        return self.size > 8

    def label(self) -> str:
        return f"{self.name}:{self.size}"


class Typed(typing.NamedTuple):
    name: str
    size: int = 4
    tags: tuple[str, ...] = ()


def test_named_tuple_as_typing_makes_it() -> None:
    a, b = Plain("x"), Typed("x")
    assert a == b and tuple(a) == ("x", 4, ())
    assert Plain._fields == Typed._fields and Plain._field_defaults == Typed._field_defaults
    assert a._asdict() == b._asdict() and a._replace(size=9).big and a.label() == "x:4"
    assert repr(Plain("y", 1)) == "Plain(name='y', size=1, tags=())"
    assert Plain.__doc__ == "A docstring." and Plain.__module__ == __name__
    assert hash(a) == hash(b)
    with pytest.raises(TypeError):
        Plain()  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        a.size = 5  # type: ignore[misc]


def test_named_tuple_refuses_a_default_before_a_required_field() -> None:
    with pytest.raises(TypeError):
        class Bad(records.NamedTuple):  # the class statement is the test
            a: int = 1
            b: int  # type: ignore[misc]


@records.record
class Mutable:
    memory: str
    mode: str
    errno: str | None = None
    ioctls: list[str] = records.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errno is None


@dataclasses.dataclass
class Reference:
    memory: str
    mode: str
    errno: str | None = None
    ioctls: list[str] = dataclasses.field(default_factory=list)


def test_record_as_dataclass_makes_it() -> None:
    for cls in (Mutable, Reference):
        a = cls("anon", "minor")
        assert (a.memory, a.mode, a.errno, a.ioctls) == ("anon", "minor", None, [])
        b = cls("anon", mode="minor", ioctls=["wake"])
        b.errno = "EINVAL"  # filled in as it goes
        assert (b.errno, b.ioctls) == ("EINVAL", ["wake"])
        assert cls("anon", "minor").ioctls is not cls("anon", "minor").ioctls  # one list each
        assert a == cls("anon", "minor") and a != b
        assert cls.__hash__ is None
        wrong: list[tuple[tuple[object, ...], dict[str, object]]] = [
            (("anon",), {}), (("a", "b", None, [], 5), {}), (("a", "b"), {"bogus": 1}),
            (("a", "b"), {"memory": "c"})]
        for args, kwargs in wrong:
            with pytest.raises(TypeError):
                cls(*args, **kwargs)
    assert repr(Mutable("anon", "minor")) == \
        repr(Reference("anon", "minor")).replace("Reference", "Mutable")
    assert Mutable("anon", "minor").ok and not hasattr(Mutable, "ioctls")
    assert Mutable("anon", "minor") != Reference("anon", "minor")
