"""A config's overrides: YAML text and `--set` assignments read safely (bounded, no aliases,
shallow), and nested overrides ({section: {key: value}}) applied to a frozen dataclass tree with
each value checked against its field's type."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, TypeVar

import yaml

from colorgan.errors import ConfigError

# A config file (or one --set value) is a few hundred bytes of YAML; PyYAML's pure-Python
# parser takes up to 2 s for this much, and 30 s for a megabyte.
MAX_CONFIG_BYTES = 2**16
MAX_YAML_DEPTH = 16  # nesting levels in a config file (it needs 2: sections, keys)
SHOWN_CHARS = 60  # the most of a bad value a config error shows
KNOWN_CHARS = 180  # the longest list of a section's keys an unknown-key error gives (one line)

Tree = TypeVar("Tree")  # a frozen dataclass of frozen dataclass sections (config.Config)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` on one line of at most `limit` characters: how every config error shows a
    value, so that a huge one cannot flood the message."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit limit for str()
        text = f"<{type(value).__name__} too large to show>"
    return clip(text, limit)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` on one line of at most `limit` characters, "..." marking a cut."""
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(section: str, key: object, known: list[str]) -> str:
    """'unknown key ...' with the closest known key when there is one, else the section's keys
    (the list grows with the keys: a long typo is shown shorter)."""
    full = f"{section}.{key}"
    close = difflib.get_close_matches(str(key), known, n=1) if isinstance(key, str) else []
    if close:
        return f"unknown key {shown(full, SHOWN_CHARS // 2)} (did you mean {section}.{close[0]}?)"
    listed = ", ".join(known)
    if len(listed) > KNOWN_CHARS:  # too many to list on one short line
        listed = f"{len(known)} keys, in docs/configuration.md"
    return f"unknown key {shown(full, SHOWN_CHARS // 3)} (known in {section}: {listed})"


def _check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` as the type `annotation` names, or raise ConfigError. A float past the
    largest float becomes infinity, which the ranges then refuse with the key's range."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) and "off" in allowed:  # YAML 1.1 reads off/on as booleans
            value = "auto" if value else "off"
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            raise ConfigError(f"{key}: {shown(value)} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check_value(key, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int past 1e308
                return math.inf if value > 0 else -math.inf
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a field type this function does not know is a programming error
        raise TypeError(f"unsupported config type {annotation!r} for {key}")
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{key}: expected {name}, got {shown(value)}")


def apply(tree: Tree, overrides: Any, source: str) -> Tree:
    """Return `tree` with nested `overrides` ({section: {key: value}}) applied; unknown sections
    and keys and values of the wrong type are refused in one line that starts with `source`."""
    if not isinstance(overrides, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections, got {type(overrides).__name__}"
        )
    sections = {f.name: f for f in dataclasses.fields(tree)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for section_name, values in overrides.items():
        if section_name not in sections:
            known = ", ".join(sections)
            raise ConfigError(f"{source}: unknown section {shown(section_name)} (known: {known})")
        section = getattr(tree, section_name)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
        hints = typing.get_type_hints(type(section))
        updates = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"{source}: {_unknown_key(section_name, key, list(hints))}")
            updates[key] = _check_value(f"{section_name}.{key}", value, hints[key])
        changes[section_name] = dataclasses.replace(section, **updates)
    return dataclasses.replace(tree, **changes)  # type: ignore[type-var]


class _Refused(yaml.YAMLError):
    """YAML that a config may not hold (aliases, deep nesting) or that Python cannot read."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without aliases (`*name`) and with at most MAX_YAML_DEPTH levels of nesting.
    A config needs neither; refusing aliases outright means a small file cannot expand into a
    huge value ("billion laughs"), and the depth limit keeps the composer off Python's stack
    limit. Anchors (`&name`) alone change nothing and are let through."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise _Refused(f"YAML aliases (*name) are not accepted (line {mark.line + 1})")
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested over {MAX_YAML_DEPTH} levels deep (line {mark.line + 1})")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _parse_yaml(text: str) -> Any:
    """`text` as YAML through _ConfigLoader; _Refused also for what Python cannot convert."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: no arbitrary objects
    except (ValueError, OverflowError, RecursionError) as err:  # e.g. an int of 5000 digits
        raise _Refused(f"cannot read a value ({clip(str(err))})") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One short line for a YAML syntax error: where it is and what is wrong."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or err.__class__.__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"not valid YAML{where}: {clip(str(problem))}"


def parse_text(text: str, source: str) -> Any:
    """A config file's text as YAML; ConfigError starting with `source` when it is not YAML a
    config may hold."""
    try:
        return _parse_yaml(text)
    except _Refused as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: {_yaml_problem(err)}") from None


def parse_set(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """Turn `["train.epochs=3", ...]` into nested overrides; values are parsed as YAML scalars."""
    nested: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(
                f"--set {shown(item)}: expected section.key=value, e.g. train.epochs=5"
            )
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"--set {shown(key.strip())}: over {MAX_CONFIG_BYTES // 2**10} KiB")
        try:
            value = _parse_yaml(raw) if raw.strip() else ""
        except _Refused as err:
            raise ConfigError(f"--set {shown(key.strip())}: {err}") from None
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return nested


# Saved configs across versions: what an older config's missing keys meant, and the keys that
# were removed (an old config at the value that meant "off" still loads; any other use is
# refused with one line).
SAVED = "saved config"  # how errors in one name it
# A saved config's format (to_dict's top-level "version"; none: 1). Version 2 made the recipe
# the default: a version-1 config without these model keys meant these values (from_dict).
# Version 3 added model.reference_match (on): a config of version 2 or older without it is off.
CONFIG_VERSION = 3
VERSION_1_MODEL = {"output_stride": 1, "base_channels": 32, "upsample": "bilinear"}
JOURNAL = "docs/journal/results.md"  # the experiments, dated, with their commands
# Keys that lost there and were removed: the value that meant "off" (a config saved before holds
# every key, and one at this value loads as if it were absent), and why.
REMOVED_KEYS: dict[str, tuple[object, str]] = {
    "model.decoder": ("conv", f"it lost to conv: {JOURNAL}"),
    "loss.rebalance": (0.0, f"it made anime colors worse: {JOURNAL}"),
    "loss.instance_noise": (0.0, f"it moved nothing beyond seed noise: {JOURNAL}"),
    "loss.real_label": (1.0, f"label smoothing moved nothing beyond seed noise: {JOURNAL}"),
}
REMOVED_VALUES = {"model.upsample": {"guided": (f"it lost to affine: {JOURNAL}", "affine")}}


def current(values: Any, source: str, missing: int | None) -> Any:
    """Overrides (`values`: {section: {key: value}}) as this version means them: the top-level
    `version` taken off (`missing` when there is none; None: a version is not allowed, as in
    --set); a version-1 config's model section gets the version-1 values of the keys it lacks
    (VERSION_1_MODEL, and the from-scratch U-Net when it is older than model.encoder); then the
    removed keys (_without_removed)."""
    if not isinstance(values, dict):
        return values  # apply says what is wrong
    values = dict(values)
    version = CONFIG_VERSION if missing is None else values.pop("version", missing)
    if type(version) is not int or not 1 <= version <= CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config version {shown(version)} is not one this colorgan reads "
            f"(1 to {CONFIG_VERSION}); was it written by a newer colorgan?"
        )
    model = values.get("model")
    if version == 1 and (model is None or isinstance(model, dict)):
        older = {} if model and "encoder" in model else {"encoder": "unet"}
        values["model"] = {**VERSION_1_MODEL, **older, **(model or {})}
    model = values.get("model")
    if version <= 2 and (model is None or isinstance(model, dict)):
        values["model"] = {"reference_match": False, **(model or {})}
    return _without_removed(values, source)


def _without_removed(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` less the removed keys at the value that meant "off" (REMOVED_KEYS); ConfigError
    naming any other use of a removed key or value (REMOVED_VALUES)."""
    saved = source == SAVED
    advice = "load it with the colorgan that wrote it" if saved else "drop it from the config"
    kept: dict[str, Any] = {}
    for section, keys in values.items():
        if not isinstance(keys, dict):
            kept[section] = keys  # apply says what is wrong
            continue
        kept[section] = {}
        for key, value in keys.items():
            full = f"{section}.{key}"
            off, why = REMOVED_KEYS.get(full, (None, ""))
            if why and value != off:
                raise ConfigError(f"{source}: {full} was removed ({why}); {advice}")
            gone = REMOVED_VALUES.get(full, {})
            if isinstance(value, str) and value in gone:
                why, instead = gone[value]
                fix = advice if saved else f"use {instead}"
                raise ConfigError(f"{source}: {full}={value} was removed ({why}); {fix}")
            if not why:
                kept[section][key] = value
    return kept
