"""Typed config dataclasses <-> command-line flags and YAML override files.

Each dataclass field becomes a ``--flag``; the docstring line under the field is its help.
A YAML file given with ``--config`` overrides the defaults; flags override the file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
from functools import lru_cache
from typing import Any

import yaml


class ConfigFileError(ValueError):
    """A YAML config file is missing, unreadable or names unknown fields."""


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(
                getattr(nxt, "value", None), ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def _parse_bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of cls (underscores become dashes), default None = unset."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = type(default)
        text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")  # argparse formats help
        kw: dict[str, Any] = {"default": None, "help": text}
        flag = f"--{f.name.replace('_', '-')}"
        if kind is bool:  # a flag (--resume), its negation (--no-resume), or an explicit --resume false
            kw.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL",
                      help=kw["help"] + f"; a flag: {flag}, or --no-{f.name.replace('_', '-')}")
            parser.add_argument(flag, dest=f.name, **kw)
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                default=None, help=argparse.SUPPRESS)
            continue
        if kind in (int, float):
            kw["type"] = kind
        parser.add_argument(flag, dest=f.name, **kw)


def load_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigFileError(f"config file '{path}' does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        raise ConfigFileError(f"config file '{path}' is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file '{path}' must hold a mapping of field: value")
    return data


def build(cls: type, args: argparse.Namespace, file_values: dict[str, Any] | None = None):
    """An instance of cls from defaults, then file values, then explicit flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict(file_values or {})
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigFileError(f"unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                              f"valid: {', '.join(sorted(names))}")
    for name in names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return cls(**values)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` strings (values parsed as YAML) to a dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigFileError(f"override '{item}' must look like field=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
