"""A registry of dataclass specs: parse, validate, coerce, round-trip, one canonical label.

A *spec* is a dataclass whose fields are the keys of its string. A :class:`SpecRegistry`
maps names (and aliases) to spec classes and turns ``"name:key=value;..."`` (the grammar
of :mod:`fisherlab.spec.grammar`), a dict ``{"name": ..., **params}`` or a ready spec into
an instance, coercing each value from the field's type annotation:

* ``int``, ``float``, ``str``, ``bool`` (``true/false/yes/no/1/0``), ``X | None`` (``none``),
  ``int | float`` (an integer when it reads as one), ``tuple[int, ...]`` / ``tuple[str, ...]``
  (comma-separated), ``Literal[...]`` (one of the listed values);
* ``field(metadata={"aliases": {"rdrop": "dropout"}})`` maps alternative spellings of a value.

Errors (:class:`SpecError` or the registry's subclass) name the spec, the key and list the
allowed keys or values. ``spec.to_string()`` gives the canonical string back
(``registry.parse(s.to_string()) == s``) and ``spec.label`` the one canonical label used
for grouping runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, get_type_hints

from fisherlab.spec.grammar import SpecError, format_spec, format_value, parse_spec

__all__ = ["Spec", "SpecRegistry", "coerce_value"]


class Spec:
    """Base of every spec (mixed into dataclasses). ``name`` is set by the registry."""

    name: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """The configuration as an ordered dict (the string's keys; ``repr=False`` fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}  # type: ignore[arg-type]

    def to_string(self) -> str:
        """Canonical string (``None`` values left out)."""
        return format_spec(self.name, self.params())

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form ``{"name": ..., **params}`` (JSON-able)."""
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params().items()}}

    @property
    def label(self) -> str:
        """The canonical label of this spec for grouping runs (default: the name)."""
        return self.name

    def __str__(self) -> str:
        return self.to_string()


def _options(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _describe(annotation: Any) -> str:
    parts = []
    for option in _options(annotation):
        if option is type(None):
            parts.append("none")
        elif typing.get_origin(option) is Literal:
            parts.append("one of " + ", ".join(map(str, typing.get_args(option))))
        elif typing.get_origin(option) in (tuple, list):
            inner = typing.get_args(option)[0]
            parts.append(f"comma-separated {getattr(inner, '__name__', inner)}s")
        else:
            parts.append({bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
                option, getattr(option, "__name__", str(option))))
    return " or ".join(parts)


def _scalar(text: str, option: Any) -> Any:
    if option is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(text)
    if option is int:
        return int(text)
    if option is float:
        return float(text)
    if option is str:
        return text
    if typing.get_origin(option) is Literal:
        if text in typing.get_args(option):
            return text
        raise ValueError(text)
    if typing.get_origin(option) in (tuple, list):
        inner = typing.get_args(option)[0]
        return tuple(_scalar(item.strip(), inner) for item in text.split(",") if item.strip())
    raise ValueError(text)


def coerce_value(raw: Any, annotation: Any, aliases: Mapping[str, str] | None = None) -> Any:
    """``raw`` (a string from a spec string, or a value from a dict) as ``annotation`` says.

    Raises ValueError with what was expected."""
    options = _options(annotation)
    if not isinstance(raw, str):
        if raw is None and type(None) in options:
            return None
        if isinstance(raw, (list, tuple)):
            raw = format_value(raw)
        elif isinstance(raw, bool) and bool in options or isinstance(raw, int) and not isinstance(raw, bool) \
                and int in options or isinstance(raw, float) and float in options:
            return raw
        else:
            raw = format_value(raw)
    text = raw.strip()
    if aliases:
        text = aliases.get(text.lower(), text)
    if text.lower() in ("none", "null") and type(None) in options:
        return None
    # int before float: "8" is an int for ``int | float``; bool only from its words
    ordered = sorted((o for o in options if o is not type(None)), key=lambda o: {bool: 0, int: 1, float: 2}.get(o, 3))
    for option in ordered:
        try:
            return _scalar(text, option)
        except ValueError:
            continue
    raise ValueError(f"expected {_describe(annotation)}, got {raw!r}")


class SpecRegistry:
    """Names -> spec classes of one kind (``strategy``, ``regulariser``, ...).

    ``error`` is the exception class raised (a :class:`SpecError` subclass); ``base`` the
    class every registered spec must subclass.
    """

    def __init__(self, kind: str, base: type, error: type[SpecError] = SpecError) -> None:
        self.kind, self.base, self.error = kind, base, error
        self._classes: dict[str, type] = {}
        self._aliases: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------
    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type], type]:
        """Class decorator: make ``name`` (and ``aliases``) parse to the decorated dataclass."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise self.error(f"register {self.kind}: invalid name {name!r} (letters, digits, '_' and '-')")

        def decorate(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise self.error(f"register {self.kind} {name!r}: {cls!r} is not a {self.base.__name__} subclass")
            for key in (name, *aliases):
                owner = self._classes.get(self._aliases.get(key, key))
                if owner is not None and owner is not cls:
                    raise self.error(f"register {self.kind}: a {self.kind} named {key!r} is already registered "
                                     f"({owner.__qualname__})")
            cls.name = name
            self._classes[name] = cls
            for alias in aliases:
                self._aliases[alias] = name
            return cls

        return decorate

    def names(self) -> list[str]:
        """Registered (canonical) names."""
        return sorted(self._classes)

    def canonical(self, name: str) -> str | None:
        """The canonical name of ``name`` or an alias (case-insensitive); None when unknown."""
        key = name.strip()
        for candidate in (key, key.lower()):
            if candidate in self._classes:
                return candidate
            if candidate in self._aliases:
                return self._aliases[candidate]
        return None

    def lookup(self, name: str, where: str) -> type:
        canonical = self.canonical(name)
        if canonical is None:
            aliases = f" (aliases: {', '.join(sorted(self._aliases))})" if self._aliases else ""
            raise self.error(f"unknown {self.kind} {name!r} in {where!r}; expected one of {self.names()}{aliases}")
        return self._classes[canonical]

    @staticmethod
    def fields(cls: type) -> dict[str, dataclasses.Field]:
        """The configurable fields of a spec class (init and repr fields), by name."""
        return {f.name: f for f in dataclasses.fields(cls) if f.init and f.repr}

    # -- parsing ------------------------------------------------------------------------
    def parse(self, spec: Any) -> Any:
        """A spec instance from a string, a dict ``{"name": ..., **params}`` or an instance (as is)."""
        if isinstance(spec, self.base):
            return spec
        if isinstance(spec, Mapping):
            params = dict(spec)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise self.error(f"{self.kind} config {dict(spec)!r} needs a 'name' key (one of {self.names()})")
            where = repr(dict(spec))
        elif isinstance(spec, str):
            try:
                name, params = parse_spec(spec, self.kind)
            except SpecError as err:
                raise self.error(str(err)) from None
            where = spec
        else:
            raise self.error(f"{self.kind} must be a string, dict or {self.base.__name__}, got {type(spec).__name__}")
        cls = self.lookup(name, where)
        return self.build(cls, params, where)

    def build(self, cls: type, params: Mapping[str, Any], where: str) -> Any:
        """``cls(**coerced params)``; unknown keys and bad values raise the registry's error."""
        fields = self.fields(cls)
        hints = get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, raw in params.items():
            if key not in fields:
                raise self.error(f"{self.kind} {where!r}: unknown key {key!r} for {cls.name!r}; "
                                 f"allowed keys: {', '.join(fields)}")
            aliases = fields[key].metadata.get("aliases")
            try:
                kwargs[key] = coerce_value(raw, hints[key], aliases)
            except ValueError as err:
                raise self.error(f"{self.kind} {where!r}: bad value for key {key!r}: {err}") from None
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise self.error(f"{self.kind} {where!r}: {err}") from err
