"""Records without the cost of making their classes: NamedTuple and a mutable record.

Making the record classes was a third of `uffdctl probe --json`'s start-up (issue 17).

typing.NamedTuple checks every field's annotation when the class is made; with
`from __future__ import annotations` each is a string that it compiles into a ForwardRef:
~0.6 ms a class, 38 classes on the probe's path, ~20 ms of the ~100 ms `probe --json` took
(benchmarks/startup.py, cProfile of `import uffdctl.abi`: 66 compile() calls for 10
classes).  The NamedTuple here is the same collections.namedtuple underneath (the same
tuple, _fields, _asdict, _replace, methods and properties of the class body), made from the
annotations' names without checking them; the type checker checks them instead, seeing
typing.NamedTuple itself.

For records filled in as they go, `dataclasses` imports `inspect` (and with it ast, dis and
tokenize) and builds each class's methods with exec(): another 14 ms.  The records the probe
fills in as it goes (probe.Cell, probe.ProbeReport, hugepages.Record, hugepages.Reservation,
memtypes.Area) are declared as dataclasses are, with @record and field(default_factory=...).
For the type checker they are dataclasses (the same constructor, checked the same way); at
run time record() gives the class __init__, __repr__ and __eq__ made from its annotations
and defaults, as dataclass(eq=True) would, without exec().
"""

from __future__ import annotations

__all__ = ["NamedTuple", "field", "record"]

TYPE_CHECKING = False  # as typing's, without importing typing at run time
if TYPE_CHECKING:
    from dataclasses import dataclass as record
    from dataclasses import field
    from typing import Any, NamedTuple
else:
    import collections

    class _NamedTupleMeta(type):
        def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if ns.get("_root", False):
                return super().__new__(mcls, name, bases, ns)
            fields = list(ns.get("__annotations__", {}))
            defaults = [ns[f] for f in fields if f in ns]
            if any(f in ns for f in fields[:len(fields) - len(defaults)]):
                raise TypeError(f"{name}: a field without a default follows one with a "
                                "default")  # as typing.NamedTuple says it
            cls = collections.namedtuple(name, fields, defaults=defaults,
                                         module=ns.get("__module__"))
            for key, value in ns.items():  # the class body: methods, properties, docstring
                if key not in fields and key not in ("__module__", "__annotations__"):
                    setattr(cls, key, value)
            cls.__annotations__ = ns.get("__annotations__", {})
            return cls

    class NamedTuple(metaclass=_NamedTupleMeta):
        _root = True

    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make: Any) -> None:
            self.make = make

    def field(*, default_factory: Any) -> Any:
        return _Factory(default_factory)

    def record(cls: type) -> type:
        # The class's own annotations, in order (inspect.get_annotations would import
        # inspect, the very cost this module avoids).
        names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
        defaults: dict[str, Any] = {}
        factories: dict[str, Any] = {}
        for name in names:
            if name in cls.__dict__:
                value = cls.__dict__[name]
                if isinstance(value, _Factory):
                    factories[name] = value.make
                    delattr(cls, name)  # as dataclass(): no class attribute for a factory
                else:
                    defaults[name] = value
        qualname = cls.__qualname__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if len(args) > len(names):
                raise TypeError(f"{qualname}() takes {len(names)} positional arguments but "
                                f"{len(args)} were given")
            values = dict(zip(names, args, strict=False))
            for key, value in kwargs.items():
                if key not in names:
                    raise TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")
                if key in values:
                    raise TypeError(f"{qualname}() got multiple values for argument {key!r}")
                values[key] = value
            for name in names[len(args):]:
                if name not in values:
                    if name in defaults:
                        values[name] = defaults[name]
                    elif name in factories:
                        values[name] = factories[name]()
                    else:
                        raise TypeError(f"{qualname}() missing argument {name!r}")
            self.__dict__.update(values)

        def __repr__(self: Any) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{qualname}({inner})"

        def __eq__(self: Any, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        cls.__hash__ = None  # mutable and compared by value, as dataclass(eq=True) leaves it
        cls.__match_args__ = names
        return cls
