"""One config system for every script and the eval CLI: a typed dataclass, filled from defaults < YAML < flags.

Generic over the dataclass, so each script only declares its fields (with ``option(default, help)``)::

    cfg = parse_config(DreamBoothConfig, argv)          # --config file.yaml --learning_rate 1e-4 ...
    cfg = load_config(DreamBoothConfig, "file.yaml", learning_rate=1e-4)   # the same from Python
    save_config(cfg, "out/train_config.yaml")            # the resolved config, beside the weights

Supported field types: bool, int, float, str, ``X | None``, ``tuple[str, ...]`` (or of int/float) and
``Literal[...]``. An unknown key or a value of the wrong type is one `ConfigError` line naming the key; dataclasses
call `check_fields(self)` in ``__post_init__`` so the Python API is validated the same way. On the command line
every field is ``--name`` (or ``--name-with-dashes``); a bool also takes ``--name``, ``--name false`` and
``--no-name``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "1", "on")
_FALSE_WORDS = ("false", "no", "0", "off")


class ConfigError(ValueError):
    """A configuration value is unknown or of the wrong type."""


def option(default: Any, help: str) -> Any:
    """A config field: its default and the one-line help that ``--help`` shows."""
    return field(default=default, metadata={"help": help})


# ------------------------------------------------------------------ types
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); X -> (X, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
        raise TypeError(f"unsupported union type {tp}")
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is Literal:
        name = "one of " + ", ".join(repr(a) for a in typing.get_args(base))
    elif typing.get_origin(base) is tuple:
        name = f"a list of {typing.get_args(base)[0].__name__}"
    else:
        name = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))
    return name + (" or null" if optional else "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against ``tp`` (the exact types YAML and Python produce); returns it normalised."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
    elif typing.get_origin(base) is Literal:
        if value in typing.get_args(base):
            return value
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of "
                          f"{', '.join(repr(a) for a in typing.get_args(base))}")
    elif typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        items = [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
        if isinstance(items, (list, tuple)):
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(items))
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config field {key} has unsupported type {tp}")
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _from_string(text: str, tp: Any, key: str) -> Any:
    """A command-line string -> a value of type ``tp`` (then checked by `_coerce`)."""
    base, optional = _unwrap_optional(tp)
    if optional and text.lower() in _NONE_WORDS:
        return None
    try:
        if typing.get_origin(base) is Literal:
            args = typing.get_args(base)
            return next((a for a in args if str(a) == text), text)
        if base is bool:
            if text.lower() in _TRUE_WORDS + _FALSE_WORDS:
                return text.lower() in _TRUE_WORDS
            return text
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"--{key} must be {_type_name(tp)}, got {text!r}") from None
    return text


def check_fields(obj: Any) -> None:
    """Type-check (and normalise, e.g. list -> tuple, int -> float) every field of a dataclass instance in place."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _coerce(getattr(obj, f.name), hints[f.name], f.name)
        object.__setattr__(obj, f.name, value)


def check_bound(obj: Any, names: tuple[str, ...], minimum: float, strict: bool = False,
                optional: bool = False) -> None:
    """Raise for the first field of ``names`` below ``minimum`` (at it too with ``strict``); with ``optional`` a
    None passes."""
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value < minimum or (strict and value == minimum):
            raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}{' or null' if optional else ''}, "
                              f"got {value}")


def check_resolution(value: int | None) -> None:
    """A side in pixels the VAE can halve three times: a positive multiple of 8 (None: the model's default)."""
    if value is not None and (value < 8 or value % 8):
        raise ConfigError(f"resolution must be a positive multiple of 8, got {value}")


# ------------------------------------------------------------------ YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; pass --config with a YAML file, "
                          "e.g. one under configs/")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------ building
def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    known = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"see `--help` for the {len(known)} known keys"
    return ConfigError(f"unknown config key {key!r}{where}; {hint}")


def check_values(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Unknown keys and wrong types in ``values`` -> one `ConfigError`; ``where`` names the source."""
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise _unknown_key_error(cls, key, where)
    hints = _hints(cls)
    try:
        return {k: _coerce(v, hints[k], k) for k, v in values.items()}
    except ConfigError as e:
        raise ConfigError(f"{e}{where}") from None


def config_from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """``cls(**values)``, checked first by `check_values`."""
    return cls(**check_values(cls, values, where))


def load_config(cls: type, path: str | Path | None = None, **overrides: Any) -> Any:
    """Defaults < YAML file at ``path`` < keyword ``overrides``."""
    values = check_values(cls, read_yaml(path), where=f" in {path}") if path is not None else {}
    return config_from_dict(cls, {**values, **overrides})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v) for f in dataclasses.fields(cfg)}


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable again with ``--config``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# resolved {type(cfg).__name__}, written by ether-diffusion\n"
                    + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump); --help still lists every flag."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(cls: type, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """``--config FILE`` plus one ``--<field>`` per dataclass field (help from the field's metadata)."""
    parser = _OneLineParser(prog=prog, description=description or (cls.__doc__ or "").strip().splitlines()[0],
                            allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML file of config values; command-line flags override it")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        base, _ = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} "
                                  f"[{_type_name(hints[f.name])}; default: {default!r}]")
        if typing.get_origin(base) is tuple:
            kw["nargs"] = "+"
        elif base is bool:
            kw["nargs"] = "?"
            kw["const"] = "true"
        parser.add_argument(*_flags(f.name), **kw)
        if base is bool:
            parser.add_argument(*_flags(f.name, "no-"), dest=f.name, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _flags(name: str, prefix: str = "") -> list[str]:
    """``--prefix+name``, and its dashed spelling when the name has underscores."""
    flags = [f"--{prefix}{name}"]
    if "_" in name:
        flags.append(f"--{prefix}{name.replace('_', '-')}")
    return flags


def command_line_keys(cls: type, argv: list[str] | None = None) -> set[str]:
    """The fields that flags in ``argv`` (default: sys.argv) set: what the user chose on the command line, as
    opposed to dataclass defaults and ``--config`` values."""
    ns = vars(build_parser(cls).parse_args(argv))
    ns.pop("config")
    return set(ns)


def parse_config(cls: type, argv: list[str] | None = None, description: str | None = None,
                 prog: str | None = None) -> Any:
    """Parse ``argv`` (default: sys.argv) into ``cls``: defaults < ``--config`` YAML < flags."""
    parser = build_parser(cls, description, prog)
    ns = vars(parser.parse_args(argv))
    path = ns.pop("config")
    hints = _hints(cls)
    overrides = {}
    for key, raw in ns.items():
        base, optional = _unwrap_optional(hints[key])
        if isinstance(raw, list):
            if optional and len(raw) == 1 and raw[0].lower() in _NONE_WORDS:
                overrides[key] = None
            else:
                overrides[key] = [_from_string(r, typing.get_args(base)[0], key) for r in raw]
        else:
            overrides[key] = _from_string(raw, hints[key], key)
    return load_config(cls, path, **overrides)
