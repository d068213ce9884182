"""What to write instead: every refusal of a spec ends with an example of what the refused field
accepts, written as it goes into the resource's YAML (`e.g. where: "deleted_at IS NULL"`).

An example lives next to its field, as `Field(examples=[...])`, or is the field's default (accepted by
definition). A rule over several fields raises `Refusal` naming the field to change and its value.
The CRD carries the same examples (crdgen, crdcel), so the model, the API server and the reference say
the same thing; tests/unit/test_refusal_examples.py checks that every example is itself accepted."""

from __future__ import annotations

import difflib
import json
import types
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

Loc = tuple[str | int, ...]


def render(value: Any) -> str:
    """A value as YAML reads it: JSON is YAML, and double quotes keep `'` inside SQL readable. Letters
    stay as they are; control and format characters are escaped (YAML refuses them raw)."""
    text = json.dumps(value, ensure_ascii=False)
    return "".join(_escape(c) if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def _escape(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"  # YAML's escapes


@dataclass(frozen=True)
class Example:
    """`key: value` pairs as written in the spec; key None: the value alone (a list item)."""

    pairs: tuple[tuple[str | None, Any], ...]

    def __str__(self) -> str:
        return "e.g. " + ", ".join(render(v) if k is None else f"{k}: {render(v)}" for k, v in self.pairs)


def eg(key: str | None, value: Any, *more: tuple[str, Any]) -> Example:
    return Example(((key, value), *more))


class Refusal(ValueError):
    """A refusal by a rule over several fields, carrying the change that satisfies it; `at` points
    below the validated object, at the value to change (e.g. the second of two equal names)."""

    def __init__(self, message: str, example: Example, at: Loc = ()) -> None:
        super().__init__(message)
        self.example = example
        self.at = at


def error_loc(err: Any, model: type[BaseModel] | None = None) -> Loc:
    """Where a pydantic error points, as the user wrote it: without the union member pydantic tried
    (`values.0.int`), with a Refusal's `at` below it."""
    cause = (err.get("ctx") or {}).get("error")
    loc = tuple(err["loc"]) if model is None else _without_union_tags(model, tuple(err["loc"]))
    return loc + (cause.at if isinstance(cause, Refusal) else ())


def _without_union_tags(model: type[BaseModel], loc: Loc) -> Loc:
    tp: Any = model
    out: list[str | int] = []
    for i, part in enumerate(loc):
        tp, _ = _strip(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and (found := _find(tp, part)) is not None:
            tp = found[1].annotation
        elif origin in (list, dict):
            tp = get_args(tp)[-1]
        elif origin in (Union, types.UnionType):
            continue
        else:
            return (*out, *loc[i:])
        out.append(part)
    return tuple(out)


def _value(info: FieldInfo) -> Any:
    if info.examples:
        return info.examples[0]
    if info.default is not PydanticUndefined and info.default is not None:
        return info.default
    return None


def _find(model: type[BaseModel], name: str | int) -> tuple[str, FieldInfo] | None:
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            return info.alias or field_name, info
    return None


def field_example(model: type[BaseModel], name: str) -> Any:
    """The example of one field of `model` (by name or alias): its first example, else its default."""
    found = _find(model, name)
    if found is None or (value := _value(found[1])) is None:
        raise LookupError(f"{model.__name__}.{name} has no example")
    return value


def suggest(model: type[BaseModel], name: str) -> Example:
    """`e.g. <alias>: <the field's example>`, for a rule over several fields that this field fixes."""
    found = _find(model, name)
    assert found is not None, name
    return eg(found[0], field_example(model, name))


def _strip(tp: Any) -> tuple[Any, list[FieldInfo]]:
    """The type without Optional and Annotated, and the FieldInfos the Annotated layers carried."""
    infos: list[FieldInfo] = []
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            infos += [a for a in args[1:] if isinstance(a, FieldInfo)]
            tp = args[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp, infos
            tp = rest[0]
        else:
            return tp, infos


def example_at(model: type[BaseModel], loc: Loc) -> Example | None:
    """The example for the value at `loc` (as pydantic reports it, by alias), or None."""
    tp: Any = model
    key: str | None = None
    value: Any = None
    for part in loc:
        tp, _ = _strip(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found = _find(tp, part)
            if found is None:
                return None
            key, info = found
            tp, value = info.annotation, _value(info)
        elif origin is list and isinstance(part, int):
            tp, key = get_args(tp)[0], None
            value = value[0] if isinstance(value, list) and value else None
        elif origin is dict and isinstance(part, str):
            tp = get_args(tp)[1]
            if isinstance(value, dict) and part in value:
                key, value = part, value[part]
            else:
                key, value = None, next(iter(value.values()), None) if isinstance(value, dict) else None
        elif origin in (Union, types.UnionType):
            continue  # pydantic names the union member it tried (`str`, `int`): same field
        else:
            return None
        if value is None:
            value = next((i.examples[0] for i in _strip(tp)[1] if i.examples), None)
    return None if value is None else eg(key, value)


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model holding the value at `loc` (for an unknown field: the object it was written in)."""
    tp: Any = model
    for part in loc[:-1]:
        tp, _ = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found = _find(tp, part)
            if found is None:
                return None
            tp = found[1].annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        elif get_origin(tp) not in (Union, types.UnionType):
            return None
    tp, _ = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def unknown_field(model: type[BaseModel], loc: Loc) -> str | None:
    """`not a field here; the fields here are a, b, c, e.g. "b"` (the closest name first)."""
    holder = model_at(model, loc)
    if holder is None or not loc:
        return None
    names = [info.alias or name for name, info in holder.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.5) or names[:1]
    return f"not a field here (a typo?); the fields here are {', '.join(names)}, {eg(None, close[0])}"


def model_named(title: str) -> type[BaseModel] | None:
    """The model class a ValidationError's title names, when exactly one has that name."""
    found: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [BaseModel]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__name__ == title:
            found.add(cls)
    return found.pop() if len(found) == 1 else None
