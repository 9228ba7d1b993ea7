"""The verifier node's configuration: command-line flags, environment, a TOML file.

``refute node`` is deployed in three ways, and each wants its own way in: a
person at a shell passes flags, a container passes ``REFUTE_*`` environment
variables, an operator keeps a TOML file under version control. All three are
read into one :class:`NodeConfig`, with a fixed precedence:

    flags  >  environment (``REFUTE_<FIELD>``)  >  TOML file  >  defaults

Every value is parsed and range-checked where it is read, so a mistake is a
:class:`ConfigError` at start-up naming the field and where the bad value came
from (``sampling_rate from REFUTE_SAMPLING_RATE: 1.5 is not in (0, 1]``), not a
crash an hour into a dispute game. An empty environment variable counts as
unset. Relative paths are relative to the node's working directory.

The private key is the one secret here. It has no flag (command lines are
visible to every user through ``ps``): it comes from ``REFUTE_KEY``, the TOML
file's ``key``, or ``key_file``. It never appears in ``repr`` or in an error
message.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "BACKENDS",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "REPLAY_MODES",
    "ConfigError",
    "NodeConfig",
    "add_node_arguments",
    "config_from_args",
    "env_name",
    "load_config",
]

#: Environment variables are ``ENV_PREFIX + field name upper-cased``.
ENV_PREFIX: Final = "REFUTE_"

REPLAY_MODES: Final = ("full", "spot")
BACKENDS: Final = ("reference", "triton")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value that is missing, malformed or out of range; says which and from where."""


class _Invalid(Exception):
    """A value's problem, before the field and source are known (see :func:`_field_value`)."""


@dataclass(frozen=True, repr=False)
class NodeConfig:
    """Everything ``refute node`` needs to start; validated on construction."""

    chain_url: str | None = None  # JSON-RPC endpoint; None: an embedded in-process chain
    deployment: str | None = None  # deployment JSON file naming the contract addresses
    initial_peers: tuple[str, ...] = ()  # hivemind multiaddrs to join the swarm through
    key: str | None = None  # hex private key (0x + 64 hex digits once loaded); never printed
    key_file: str | None = None  # file holding the hex private key
    sampling_rate: float = 1.0  # fraction of claims replayed, in (0, 1]
    replay_mode: str = "full"  # full | spot
    spot_ops: int = 8  # segments (checkpoint to checkpoint) replayed per claim in spot mode
    backend: str = "reference"  # reference | triton
    state_path: str = "refute-node.sqlite"  # the node's SQLite state file
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # 0: any free port
    poll_interval: float = 1.0  # seconds between polls of the swarm and the chain
    chain_retry_s: float = 60.0  # seconds to keep retrying an unreachable chain
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _field_value(f.name, getattr(self, f.name), "NodeConfig", text=False)
            object.__setattr__(self, f.name, value)  # the normalised form (e.g. "0x" + lower-case key)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "'<redacted>'" if f.name == "key" and value is not None else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"NodeConfig({', '.join(parts)})"

    def private_key(self) -> str:
        """The node's private key, ``0x`` + 64 hex digits, from ``key`` or from ``key_file``.

        Exactly one of the two must be set; the key file holds the hex key
        (surrounding whitespace ignored).
        """
        if self.key is not None and self.key_file is not None:
            raise ConfigError("key and key_file are both set: give only one")
        if self.key is not None:
            return self.key
        if self.key_file is None:
            raise ConfigError("no private key: set REFUTE_KEY, key in the config file, or --key-file")
        try:
            text = Path(self.key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"key_file {self.key_file}: cannot read it ({exc})") from None
        try:
            return _key(text.strip())
        except _Invalid as exc:
            raise ConfigError(f"key from key_file {self.key_file}: {exc}") from None


# -- value parsing --------------------------------------------------------------
#
# Each field has a text parser (for environment variables and flags, which are
# strings) and a checker of the typed value (for TOML, code and parsed text),
# which returns the normalised value. Both raise _Invalid with the problem.


def _text_str(text: str) -> str:
    return text


def _text_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII):
        raise _Invalid(f"{text!r} is not an integer")
    return int(text)


def _text_float(text: str) -> float:
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text, re.ASCII):
        raise _Invalid(f"{text!r} is not a number")
    return float(text)


def _text_peers(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def _is_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {type(value).__name__}")
    return value


def _nonempty(value: Any) -> str:
    if not _is_str(value).strip():
        raise _Invalid("must not be empty")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _int_in(lo: int, hi: int | None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {type(value).__name__}")
        if value < lo or (hi is not None and value > hi):
            raise _Invalid(f"{value} is not in [{lo}, {'inf' if hi is None else hi}]")
        return value

    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Invalid(f"{value} is not a finite number")
    return number


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise _Invalid(f"{value} is not > 0")
    return number


def _rate(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise _Invalid(f"{value} is not in (0, 1]")
    return number


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _is_str(value).strip()
        text = text.upper() if upper else text
        if text not in options:
            raise _Invalid(f"{value!r} is not one of {', '.join(options)}")
        return text

    return check


def _url(value: Any) -> str:
    # The message names the part that is wrong, not the URL: endpoints often carry an API token.
    text = _nonempty(value).strip()
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
    except ValueError as exc:
        raise _Invalid(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise _Invalid(f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not http:// or https://")
    if not hostname:
        raise _Invalid("the URL has no host")
    return text


def _key(value: Any) -> str:
    # The message never repeats the value: it is a secret even when malformed.
    text = _is_str(value)
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digits, re.ASCII):
        raise _Invalid("not a private key (expected 64 hex digits, optionally 0x-prefixed; value not shown)")
    if int(digits, 16) == 0 or int(digits, 16) >= _SECP256K1_N:
        raise _Invalid("not a valid secp256k1 private key (value not shown)")
    return "0x" + digits.lower()


_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _peers(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected a list of multiaddrs, got {type(value).__name__}")
    peers: list[str] = []
    for item in value:
        for peer in _is_str(item).split(","):  # a flag or list entry may itself be comma-separated
            peer = peer.strip()
            if not peer:
                continue
            if not peer.startswith("/") or re.search(r"\s", peer):
                raise _Invalid(f"{peer!r} is not a multiaddr (like /ip4/1.2.3.4/tcp/31337/p2p/Qm...)")
            peers.append(peer)
    return tuple(peers)


def _host(value: Any) -> str:
    text = _nonempty(value).strip()
    if re.search(r"\s", text):
        raise _Invalid(f"{value!r} is not a host name or address")
    return text


@dataclass(frozen=True)
class _Spec:
    parse_text: Callable[[str], Any]
    check: Callable[[Any], Any]
    flag: str | None  # None: no command-line flag (the key)
    metavar: str
    help: str


_SPECS: Final[Mapping[str, _Spec]] = {
    "chain_url": _Spec(_text_str, _optional(_url), "--chain-url", "URL",
                       "JSON-RPC endpoint of the chain (default: an embedded in-process chain)"),
    "deployment": _Spec(_text_str, _optional(_nonempty), "--deployment", "FILE",
                        "deployment JSON file naming the contract addresses"),
    "initial_peers": _Spec(_text_peers, _peers, "--initial-peers", "MULTIADDR",
                           "swarm peer to join through (repeatable, or comma-separated)"),
    "key": _Spec(_text_str, _optional(_key), None, "HEX", "hex private key (environment or config file only)"),
    "key_file": _Spec(_text_str, _optional(_nonempty), "--key-file", "FILE", "file holding the hex private key"),
    "sampling_rate": _Spec(_text_float, _rate, "--sampling-rate", "RATE",
                           "fraction of claims to replay, in (0, 1] (default 1.0)"),
    "replay_mode": _Spec(_text_str, _choice(REPLAY_MODES), "--replay-mode", "MODE",
                         "full or spot replay (default full)"),
    "spot_ops": _Spec(_text_int, _int_in(1, None), "--spot-ops", "N",
                      "segments (checkpoint to checkpoint) replayed per claim in spot mode (default 8)"),
    "backend": _Spec(_text_str, _choice(BACKENDS), "--backend", "NAME",
                     "operator backend: reference or triton (default reference)"),
    "state_path": _Spec(_text_str, _nonempty, "--state", "FILE",
                        "SQLite state file (default refute-node.sqlite)"),
    "metrics_host": _Spec(_text_str, _host, "--metrics-host", "HOST",
                          "address for /metrics and /health (default 127.0.0.1)"),
    "metrics_port": _Spec(_text_int, _int_in(0, 65535), "--metrics-port", "PORT",
                          "port for /metrics and /health, 0 for any free one (default 9464)"),
    "poll_interval": _Spec(_text_float, _positive, "--poll-interval", "SECONDS",
                           "seconds between polls of the swarm and the chain (default 1.0)"),
    "chain_retry_s": _Spec(_text_float, _positive, "--chain-retry", "SECONDS",
                           "seconds to keep retrying an unreachable chain (default 60)"),
    "log_level": _Spec(_text_str, _choice(LOG_LEVELS, upper=True), "--log-level", "LEVEL",
                       "DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"),
}
assert set(_SPECS) == {f.name for f in fields(NodeConfig)}


def _field_value(name: str, value: Any, source: str, *, text: bool) -> Any:
    """``value`` for field ``name`` parsed (strings, if ``text``) and checked; ConfigError names both."""
    spec = _SPECS[name]
    try:
        if text and isinstance(value, str):
            value = spec.parse_text(value.strip())
        return spec.check(value)
    except _Invalid as exc:
        raise ConfigError(f"{name} from {source}: {exc}") from None


def env_name(name: str) -> str:
    """The environment variable of field ``name``: ``REFUTE_`` + the name upper-cased."""
    return ENV_PREFIX + name.upper()


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - set(_SPECS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown keys {', '.join(unknown)} (known: {', '.join(_SPECS)})"
        )
    return data


def load_config(
    cli: Mapping[str, Any], env: Mapping[str, str] = os.environ, toml_path: str | None = None
) -> NodeConfig:
    """The node's configuration: flags > environment > TOML file > defaults.

    ``cli`` maps field names to flag values, None meaning "not given" (strings
    are parsed like environment values; typed values are checked as they are).
    ``env`` is searched for ``REFUTE_<FIELD>``; an empty value counts as unset.
    ``toml_path`` names a TOML file whose top-level keys are field names.
    """
    unknown = sorted(set(cli) - set(_SPECS))
    if unknown:
        raise ConfigError(f"unknown settings {', '.join(unknown)} (known: {', '.join(_SPECS)})")
    toml = _read_toml(toml_path) if toml_path is not None else {}
    values: dict[str, Any] = {}
    for name, spec in _SPECS.items():
        if cli.get(name) is not None:
            source = spec.flag or f"argument {name!r}"
            values[name] = _field_value(name, cli[name], source, text=True)
        elif env.get(env_name(name), "").strip():
            values[name] = _field_value(name, env[env_name(name)], env_name(name), text=True)
        elif name in toml:
            values[name] = _field_value(name, toml[name], f"config file {toml_path}", text=False)
    return NodeConfig(**values)


class _RefuseKeyFlag(argparse.Action):
    """``--key``: refused with a pointer to the safe ways (the value is not echoed)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "there is no --key flag (command lines are visible to other users): "
            "set REFUTE_KEY, key in the config file, or --key-file"
        )


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (all defaulting to None: "not given") and ``--config PATH``.

    There is no flag for the private key (``--key`` is refused): give it in
    ``REFUTE_KEY``, the config file, or a key file.
    """
    parser.add_argument("--config", metavar="PATH", default=None, help="TOML file of settings (keys: field names)")
    # Reserved so that argparse's prefix matching cannot take "--key 0x..." for "--key-file 0x...".
    parser.add_argument("--key", nargs="?", action=_RefuseKeyFlag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for name, spec in _SPECS.items():
        if spec.flag is None:
            continue
        parser.add_argument(
            spec.flag,
            dest=name,
            metavar=spec.metavar,
            default=None,
            action="append" if name == "initial_peers" else "store",
            help=f"{spec.help}; env {env_name(name)}",
        )


def config_from_args(ns: argparse.Namespace, env: Mapping[str, str] = os.environ) -> NodeConfig:
    """:func:`load_config` from a namespace parsed with :func:`add_node_arguments`."""
    cli = {name: getattr(ns, name) for name, spec in _SPECS.items() if spec.flag is not None}
    return load_config(cli, env, ns.config)
