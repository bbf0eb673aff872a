"""The one ``name:key=value;key=value`` grammar of fisherlab (torch-free).

Every configuration string of the toolkit -- unfreezing strategies, methods, regularisers --
is written in this grammar and parsed here, and nowhere else::

    gradual:k=800
    permutation:order=5,4,0,1,2,3;k=50
    fisher_penalty:alpha=0.01;method=finite_difference

``name`` is the registered name (or an alias), ``;`` separates ``key=value`` items and a
value may be a comma-separated list (``order=5,4,3``). Several specs in one string are
joined by ``;`` as well: a new spec starts at every item that is a bare name or has its
``:`` before the first ``=`` (``l2:weight=0.1;consistency:view=dropout``). A JSON/YAML list
of spec strings is the other way to give several.

Older regulariser strings separated keys with ``,`` (``fisher_penalty:alpha=0.01,method=...``);
:func:`parse_spec` recognises that form and raises a :class:`SpecError` that shows the new
one. Stores written with it are read by :func:`fisherlab.runs.labels.labels_of`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fisherlab.errors import FisherlabError

__all__ = ["SpecError", "parse_spec", "format_spec", "format_value", "split_specs"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-./]*$")
_OLD_KEY = re.compile(r",\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


class SpecError(FisherlabError, ValueError):
    """A spec string or config is malformed (the message names the spec, the key and what is allowed)."""


def parse_spec(text: Any, what: str = "spec") -> tuple[str, dict[str, str]]:
    """``"name:k=v;k2=v2"`` -> ``("name", {"k": "v", "k2": "v2"})`` (values stay strings).

    Raises :class:`SpecError` for an empty name, an item that is not ``key=value``, a key
    given twice, or the old ``,``-separated key form (with the string in the new form).
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what}: expected a non-empty string like 'name:key=value;key=value', got {text!r}")
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"{what} {text!r}: {name!r} is not a name (letters, digits, '_', '-')")
    params: dict[str, str] = {}
    for item in (part.strip() for part in rest.split(";")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"{what} {text!r}: {item!r} is not key=value")
        if key in params:
            raise SpecError(f"{what} {text!r}: key {key!r} given twice")
        if _OLD_KEY.search(value):
            new = text.strip().split(":", 1)[0] + ":" + ";".join(
                p.strip() for p in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", rest) if p.strip())
            raise SpecError(f"{what} {text!r}: keys are separated by ';' (',' was the old form); write {new!r}")
        params[key] = value.strip()
    return name, params


def format_value(value: Any) -> str:
    """The string form of one value: lists comma-joined, booleans ``true``/``false``."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_spec(name: str, params: Mapping[str, Any]) -> str:
    """``format_spec("gradual", {"k": 800})`` -> ``"gradual:k=800"`` (``None`` values left out)."""
    parts = [f"{key}={format_value(value)}" for key, value in params.items() if value is not None]
    return name + (":" + ";".join(parts) if parts else "")


def _starts_spec(item: str) -> bool:
    colon, eq = item.find(":"), item.find("=")
    return eq < 0 or (0 <= colon < eq)


def split_specs(specs: str | Iterable[Any] | None, what: str = "specs") -> list[Any]:
    """Several specs -> a list: ``None`` -> ``[]``; a JSON list string or an iterable as given
    (strings stripped, other objects kept); one string split at each item starting a new spec."""
    if specs is None:
        return []
    if isinstance(specs, str):
        text = specs.strip()
        if text.startswith("["):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as err:
                raise SpecError(f"{what}: not a valid JSON list ({err})") from None
            if not isinstance(loaded, list):
                raise SpecError(f"{what}: expected a JSON list, got {type(loaded).__name__}")
            return [str(item).strip() for item in loaded if str(item).strip()]
        out: list[str] = []
        for item in (part.strip() for part in text.split(";")):
            if not item:
                continue
            if _starts_spec(item) or not out:
                out.append(item)
            else:
                out[-1] = f"{out[-1]};{item}"
        return out
    return [s.strip() if isinstance(s, str) else s for s in specs if not (isinstance(s, str) and not s.strip())]
