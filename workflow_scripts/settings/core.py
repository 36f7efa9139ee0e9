"""Settings objects: each setting of a command stated once, with its type, default, range
and help.

A command's settings are a frozen dataclass deriving from :class:`Settings` whose fields
are made by :func:`setting`.  From that one definition come

* the command's argparse options (:func:`add_arguments`) and the object built from the
  parsed arguments (:meth:`Settings.from_args`),
* the object the library's entry points take (built directly, checked on construction:
  a value out of range is a :class:`SettingError` naming the setting and its flag),
* the config schema's properties of the section the settings are read from
  (:func:`schema_properties`, filled in by :func:`workflow_scripts.config.load_schema`),
* the object the workflow's plan builds from the config (:meth:`Settings.from_config`) and
  the job's flags (:meth:`Settings.flags`): in field order, whatever the config's key
  order, with values in their canonical type (``epochs: 1`` and ``epochs: 1.0`` are the
  same ``--epochs 1.0``), so the same configuration written differently plans nothing.

A *listable* setting (``listable=True``) may be a list in the config: its values are
candidates, one job each (:meth:`Settings.config_lists`); a job's command line takes one.

A field's config section is the ``SECTION`` of the class that declares it, so shared
fields (the compute device, the sample batches of Fisher and Gram jobs) are read from one
section by every command that has them.  No torch: Snakemake reads this while it parses.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import UserError

_SPEC = "setting"
_SCHEMA_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


class SettingError(UserError, ValueError):
    """A setting's value is of the wrong type, out of range or not one of its choices."""


@dataclass(frozen=True)
class Spec:
    """What a field of a settings object is (see :func:`setting`)."""

    help: str
    type: type  # int, float, str or bool (of the items, for lists and maps)
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    choices: tuple | None = None
    required: bool = False  # the command line must give it (no default)
    many: bool = False  # a list of values (``--flag a b``)
    mapping: bool = False  # KEY=VALUE pairs (``--flag k=v k2=v2``), a dict
    config: bool = True  # read from the config section (False: a per-job value)
    config_key: str | None = None  # its config key, when not the field name
    flag: str | None = None  # its flag without ``--``, when not the field name
    shared: bool = False  # never prefixed (the compute device of a prefixed group)
    metavar: str | None = None
    schema: dict | None = None  # config schema of the value, replacing the derived one
    split: str | None = None  # lists and maps: a command-line item may join several with this
    listable: bool = False  # the config may list several values (candidates); a job takes one

    def flag_name(self, name: str, prefix: str = "") -> str:
        base = self.flag or name.replace("_", "-")
        return f"--{prefix}-{base}" if prefix and not self.shared else f"--{base}"

    def range_text(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.exclusive_minimum is not None:
            parts.append(f"> {self.exclusive_minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.exclusive_maximum is not None:
            parts.append(f"< {self.exclusive_maximum:g}")
        return " and ".join(parts)


def setting(default: Any, help: str, *, type: type | None = None, **spec) -> Any:
    """A settings field: its default, help text and :class:`Spec` entries (range, choices,
    flag, ...).  ``type`` defaults to the default's type."""
    if type is None:
        if default is None:
            raise TypeError("a setting without a default value needs its type")
        type = builtin_type(default)
    meta = {_SPEC: Spec(help=help, type=type, **spec)}
    if isinstance(default, (list, dict)):  # a fresh copy per object
        return field(default_factory=lambda: type_of(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def type_of(value):
    return list if isinstance(value, list) else dict


def builtin_type(value) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, (list, tuple)):
        return builtin_type(value[0]) if value else str
    return type(value)


@dataclass(frozen=True)
class Entry:
    """One field of a settings class, with where the config keeps it."""

    name: str
    spec: Spec
    default: Any
    section: str | None

    @property
    def key(self) -> str:
        return self.spec.config_key or self.name


def _coerce_one(entry: Entry, value):
    spec, where = entry.spec, describe(entry)
    want = spec.type
    if want is bool:
        if not isinstance(value, bool):
            raise SettingError(f"{where} must be true or false, got {value!r}")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise SettingError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    elif want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SettingError(f"{where} must be a finite number, got {value!r}")
    elif want is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise SettingError(f"{where} must be a string, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise SettingError(f"{where} must be one of {', '.join(map(str, spec.choices))}, "
                           f"got {value!r}")
    if not in_range(spec, value):
        raise SettingError(f"{where} must be {spec.range_text()}, got {value!r}")
    return value


def in_range(spec: Spec, value) -> bool:
    if spec.minimum is not None and value < spec.minimum:
        return False
    if spec.maximum is not None and value > spec.maximum:
        return False
    if spec.exclusive_minimum is not None and value <= spec.exclusive_minimum:
        return False
    return spec.exclusive_maximum is None or value < spec.exclusive_maximum


def describe(entry: Entry) -> str:
    """``setting batch_size (--batch-size)``: how errors name a setting."""
    return f"setting {entry.name} ({entry.spec.flag_name(entry.name)})"


def coerce(entry: Entry, value):
    """``value`` in the setting's canonical type, checked; None stays None unless required."""
    spec = entry.spec
    if value is None:
        if spec.required:
            raise SettingError(f"{describe(entry)} is required")
        return None
    if spec.mapping:
        return _coerce_mapping(entry, value)
    if spec.many:
        if isinstance(value, (str, int, float, bool)):
            value = [value]
        items = _split(entry, value)
        if not items:
            raise SettingError(f"{describe(entry)} must list at least one value")
        return [_coerce_one(entry, v) for v in items]
    return _coerce_one(entry, value)


def _split(entry: Entry, items) -> list:
    sep = entry.spec.split
    if sep is None:
        return list(items)
    return [part.strip() for item in items
            for part in (item.split(sep) if isinstance(item, str) else [item])
            if not isinstance(part, str) or part.strip()]


def _coerce_mapping(entry: Entry, value) -> dict:
    """A dict (keys in the order of ``choices``, else sorted) from a dict or KEY=VALUE items."""
    if isinstance(value, str):  # one comma-joined item
        value = [value]
    if isinstance(value, (list, tuple)):  # from the command line
        pairs = [_pair(item, entry) for item in _split(entry, value)]
        value = {}
        for key, item in pairs:
            if key in value:
                raise SettingError(f"{describe(entry)} names {key!r} twice")
            value[key] = item
    if not isinstance(value, dict) or not value:
        raise SettingError(f"{describe(entry)} must map keys to values, got {value!r}")
    keys = entry.spec.choices
    unknown = [k for k in value if keys is not None and k not in keys]
    if unknown:
        raise SettingError(f"{describe(entry)}: key {unknown[0]!r} is not one of "
                           f"{', '.join(keys)}")
    order = list(keys) if keys is not None else sorted(value, key=str)
    return {str(k): value[k] for k in order if k in value}


def _pair(text, entry: Entry) -> tuple[str, str]:
    if isinstance(text, tuple):
        return text
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip() or not value.strip():
        raise SettingError(f"{describe(entry)}: expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class Settings:
    """Base of the settings objects: checks and converts every field on construction."""

    SECTION: ClassVar[str | None] = None  # the config section this class's own fields are in

    def __post_init__(self):
        for entry in self.entries():
            object.__setattr__(self, entry.name, coerce(entry, getattr(self, entry.name)))

    @classmethod
    def entries(cls) -> list[Entry]:
        """The fields in order, each with the config section of the class declaring it."""
        owners = {}
        for klass in reversed(cls.__mro__):
            for name in getattr(klass, "__annotations__", {}):
                owners.setdefault(name, klass)
        out = []
        for f in dataclasses.fields(cls):
            spec = f.metadata.get(_SPEC)
            if spec is None:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(Entry(f.name, spec, default, getattr(owners[f.name], "SECTION", None)))
        return out

    @classmethod
    def entry(cls, name: str) -> Entry:
        for entry in cls.entries():
            if entry.name == name:
                return entry
        raise KeyError(f"{cls.__name__} has no setting {name!r}")

    @classmethod
    def from_args(cls, args: argparse.Namespace, prefix: str = "", **values):
        """The settings parsed by :func:`add_arguments` (same ``prefix``); ``values`` override."""
        given = {e.name: getattr(args, dest(e, prefix)) for e in cls.entries()
                 if hasattr(args, dest(e, prefix))}
        return cls(**{**given, **values})

    @classmethod
    def from_config(cls, sections: dict, only=None, **values):
        """The settings of a (filled) config: each field from its section's key (fields in
        ``only``, when given), else its default; ``values`` give the per-job fields
        (``config=False``) and overrides."""
        given = {}
        for e in cls.entries():
            if e.spec.config and e.section is not None and (only is None or e.name in only):
                section = sections.get(e.section) or {}
                if e.key in section:
                    given[e.name] = section[e.key]
                if e.spec.listable and isinstance(given.get(e.name), list) and e.name not in values:
                    if len(given[e.name]) != 1:
                        raise SettingError(f"{describe(e)} lists {given[e.name]}: one job takes "
                                           "one value (the plan gives each candidate its own)")
                    given[e.name] = given[e.name][0]
        return cls(**{**given, **values})

    @classmethod
    def config_lists(cls, sections: dict) -> dict[str, list]:
        """Each listable setting's values in the config, as a list in the order given (one
        value, or none given: a list of that one, or of the default), each checked."""
        out = {}
        for e in cls.entries():
            if e.spec.listable and e.spec.config and e.section is not None:
                value = (sections.get(e.section) or {}).get(e.key, e.default)
                out[e.name] = [coerce(e, v) for v in (value if isinstance(value, list)
                                                      else [value])]
        return out

    def flags(self, prefix: str = "", only=None, exclude=()) -> str:
        """The command-line flags of these settings: one per field (None: none) in field
        order, shell-quoted; ``only`` / ``exclude`` select fields by name."""
        words = [flag(e.spec.flag_name(e.name, prefix), getattr(self, e.name))
                 for e in self.entries()
                 if (only is None or e.name in only) and e.name not in exclude]
        return " ".join(w for w in words if w)

    @classmethod
    def config_flags(cls, sections: dict, prefix: str = "", only=None, **values) -> str:
        """A job's flags: the settings read from the config (:meth:`from_config`) and the
        per-job ``values``, nothing else (settings the plan does not set keep the command's
        defaults), restricted to ``only`` when given."""
        settings = cls.from_config(sections, only=only, **values)
        read = [e.name for e in cls.entries()
                if (e.spec.config and e.section is not None) or e.name in values]
        return settings.flags(prefix, only=[n for n in read if only is None or n in only])

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, settings=None, **overrides):
        """``settings`` (an object of this class, or None for the defaults) with
        ``overrides`` applied: how library entry points take their settings."""
        if settings is None:
            return cls(**overrides)
        if not isinstance(settings, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(settings).__name__}")
        return settings.replace(**overrides) if overrides else settings

    def as_dict(self) -> dict:
        return {e.name: getattr(self, e.name) for e in self.entries()}


def flag(name: str, value) -> str:
    """One value as a flag: True ``--x``, False ``--no-x``, None nothing, a list ``--x a b``,
    a dict ``--x k=v ...``, else ``--x value``; shell-quoted, numbers in canonical form."""
    if value is None:
        return ""
    if value is True:
        return name
    if value is False:
        return "--no-" + name[2:]
    if isinstance(value, dict):
        value = [f"{k}={text(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return " ".join([name] + [shlex.quote(text(v)) for v in value])
    return f"{name} {shlex.quote(text(value))}"


def text(value) -> str:
    """A value as a command-line word: floats by their shortest round-trip form (``1.0``,
    ``0.0002``), anything else by ``str``."""
    return repr(value) if isinstance(value, float) else str(value)


def dest(entry: Entry, prefix: str = "") -> str:
    """The argparse destination of a field (``eval_batch_size`` with prefix ``eval``)."""
    return f"{prefix}_{entry.name}" if prefix and not entry.spec.shared else entry.name


def _arg_type(entry: Entry):
    spec = entry.spec
    if spec.mapping:
        return str
    if spec.type is str:
        return str

    def parse(text: str):
        try:
            value = spec.type(text)
        except ValueError:
            kind = "an integer" if spec.type is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if spec.type is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if not in_range(spec, value):
            raise argparse.ArgumentTypeError(f"expected a value {spec.range_text()}, got {text!r}")
        return value

    parse.__name__ = spec.type.__name__
    return parse


def help_text(entry: Entry) -> str:
    """The setting's help with its default (``%`` escaped for argparse)."""
    spec, default = entry.spec, entry.default
    shown = ""
    if spec.type is bool and default is not None:
        shown = f" (default {'on' if default else 'off'})"
    elif default is not None and not spec.required:
        shown = f" (default {' '.join(map(text, default)) if isinstance(default, list) else text(default)})"
    return (spec.help + shown).replace("%", "%%")


def add_arguments(parser, cls, prefix: str = "", exclude=(), only=None) -> None:
    """The argparse options of ``cls``'s fields (``only`` / not ``exclude``), flags
    ``--PREFIX-NAME`` with a ``prefix``."""
    for entry in cls.entries():
        if entry.name in exclude or (only is not None and entry.name not in only):
            continue
        spec = entry.spec
        kwargs: dict = dict(dest=dest(entry, prefix), help=help_text(entry))
        if spec.type is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=entry.default)
        else:
            kwargs.update(type=_arg_type(entry), default=entry.default)
            if spec.choices is not None and not spec.mapping:
                kwargs["choices"] = spec.choices
            if spec.many or spec.mapping:
                kwargs["nargs"] = "+"
            if spec.required:
                kwargs.update(required=True, default=None)
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
        parser.add_argument(spec.flag_name(entry.name, prefix), **kwargs)


def value_schema(entry: Entry) -> dict:
    """The JSON schema of one value of the setting (its items, for lists)."""
    spec = entry.spec
    if spec.schema is not None:
        return dict(spec.schema)
    out: dict = {"enum": list(spec.choices)} if spec.choices is not None else {
        "type": _SCHEMA_TYPES[spec.type]}
    for key, json_key in (("minimum", "minimum"), ("maximum", "maximum"),
                          ("exclusive_minimum", "exclusiveMinimum"),
                          ("exclusive_maximum", "exclusiveMaximum")):
        if getattr(spec, key) is not None:
            out[json_key] = getattr(spec, key)
    return out


def schema_properties(classes, section: str) -> dict[str, dict]:
    """The config schema's properties that ``classes`` read from ``section``: type, range,
    choices, default and description, one per config key (the first class that has it)."""
    props: dict[str, dict] = {}
    for cls in classes:
        for entry in cls.entries():
            if not entry.spec.config or entry.section != section or entry.key in props:
                continue
            schema = value_schema(entry)
            if entry.spec.many and entry.spec.schema is None:
                schema = {"type": "array", "items": schema, "minItems": 1}
            elif entry.spec.listable:  # one value, or a list of candidates (the same range)
                schema = {**schema, "type": [schema["type"], "array"], "items": dict(schema),
                          "minItems": 1, "uniqueItems": True}
            schema["description"] = entry.spec.help
            if entry.default is not None:
                schema["default"] = entry.default
            props[entry.key] = schema
    return props
