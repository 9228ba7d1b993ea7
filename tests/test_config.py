"""Node configuration: flags > environment > TOML > defaults, every bad value a ConfigError naming field and source."""

import argparse
import dataclasses
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refute.verifier.config import (
    ConfigError,
    NodeConfig,
    add_node_arguments,
    config_from_args,
    env_name,
    load_config,
)

KEY = "0x" + "5a" * 32
FIELDS = [f.name for f in dataclasses.fields(NodeConfig)]

# Three distinct valid settings per field: (TOML value, environment text, flag value as argparse gives it).
# The key has no flag, so its third column is a programmatic `cli` value.
SOURCES = {
    "chain_url": ("http://toml:8545", "http://env:8545", "https://cli:8545/v3/x"),
    "deployment": ("toml.json", "env.json", "cli.json"),
    "initial_peers": (["/ip4/1.1.1.1/tcp/1"], "/ip4/2.2.2.2/tcp/2,/ip4/3.3.3.3/tcp/3", ["/dns/cli/tcp/4"]),
    "key": ("11" * 32, "0x" + "22" * 32, "0X" + "33" * 32),
    "key_file": ("toml.key", "env.key", "cli.key"),
    "sampling_rate": (0.25, "0.5", "0.75"),
    "replay_mode": ("spot", "full", "spot"),
    "spot_ops": (2, "3", "4"),
    "backend": ("triton", "reference", "triton"),
    "state_path": ("toml.sqlite", "env.sqlite", "cli.sqlite"),
    "metrics_host": ("0.0.0.0", "::1", "localhost"),
    "metrics_port": (1000, "2000", "0"),
    "poll_interval": (0.5, "2", "3.5"),
    "chain_retry_s": (10, "20.5", "1e2"),
    "log_level": ("debug", "warning", "Error"),
}
EXPECTED = {
    "chain_url": ("http://toml:8545", "http://env:8545", "https://cli:8545/v3/x"),
    "deployment": ("toml.json", "env.json", "cli.json"),
    "initial_peers": (("/ip4/1.1.1.1/tcp/1",), ("/ip4/2.2.2.2/tcp/2", "/ip4/3.3.3.3/tcp/3"), ("/dns/cli/tcp/4",)),
    "key": ("0x" + "11" * 32, "0x" + "22" * 32, "0x" + "33" * 32),
    "key_file": ("toml.key", "env.key", "cli.key"),
    "sampling_rate": (0.25, 0.5, 0.75),
    "replay_mode": ("spot", "full", "spot"),
    "spot_ops": (2, 3, 4),
    "backend": ("triton", "reference", "triton"),
    "state_path": ("toml.sqlite", "env.sqlite", "cli.sqlite"),
    "metrics_host": ("0.0.0.0", "::1", "localhost"),
    "metrics_port": (1000, 2000, 0),
    "poll_interval": (0.5, 2.0, 3.5),
    "chain_retry_s": (10.0, 20.5, 100.0),
    "log_level": ("DEBUG", "WARNING", "ERROR"),
}


def toml_text(values: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # JSON's string escapes are TOML basic-string escapes
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in values.items())


@pytest.fixture
def write_toml(tmp_path):
    def write(values: dict, name: str = "node.toml") -> str:
        path = tmp_path / name
        path.write_text(toml_text(values))
        return str(path)

    return write


def test_defaults():
    assert load_config({}, env={}) == NodeConfig()
    c = NodeConfig()
    got = (c.chain_url, c.initial_peers, c.sampling_rate, c.replay_mode, c.metrics_port)
    assert got == (None, (), 1.0, "full", 9464)


def test_each_source_alone(write_toml):
    toml = write_toml({f: SOURCES[f][0] for f in FIELDS})
    assert load_config({}, env={}, toml_path=toml) == NodeConfig(**{f: EXPECTED[f][0] for f in FIELDS})
    env = {env_name(f): SOURCES[f][1] for f in FIELDS}
    assert load_config({}, env=env) == NodeConfig(**{f: EXPECTED[f][1] for f in FIELDS})
    cli = {f: SOURCES[f][2] for f in FIELDS}
    assert load_config(cli, env={}) == NodeConfig(**{f: EXPECTED[f][2] for f in FIELDS})


@pytest.mark.parametrize("split", range(4))
def test_precedence_flags_over_env_over_toml_over_defaults(write_toml, split):
    # Fields take turns being set in: nothing, TOML only, TOML + env, TOML + env + flag.
    toml_fields = [f for i, f in enumerate(FIELDS) if (i + split) % 4 >= 1]
    env_fields = [f for i, f in enumerate(FIELDS) if (i + split) % 4 >= 2]
    cli_fields = [f for i, f in enumerate(FIELDS) if (i + split) % 4 >= 3]
    toml = write_toml({f: SOURCES[f][0] for f in toml_fields})
    env = {env_name(f): SOURCES[f][1] for f in env_fields}
    cli = {f: (SOURCES[f][2] if f in cli_fields else None) for f in FIELDS}
    got = load_config(cli, env=env, toml_path=toml)
    for f in FIELDS:
        want = (
            EXPECTED[f][2] if f in cli_fields
            else EXPECTED[f][1] if f in env_fields
            else EXPECTED[f][0] if f in toml_fields
            else getattr(NodeConfig(), f)
        )
        assert getattr(got, f) == want, f


def test_empty_environment_values_are_unset(write_toml):
    toml = write_toml({"sampling_rate": 0.5, "chain_url": "http://toml:1"})
    got = load_config({}, env={"REFUTE_SAMPLING_RATE": "", "REFUTE_CHAIN_URL": "  "}, toml_path=toml)
    assert (got.sampling_rate, got.chain_url) == (0.5, "http://toml:1")


BAD_TEXT = [
    ("chain_url", "ftp://host", "scheme ftp://"),
    ("chain_url", "http://", "no host"),
    ("chain_url", "localhost:8545", "scheme"),
    ("initial_peers", "/ip4/1.2.3.4/tcp/1,not-a-multiaddr", "not a multiaddr"),
    ("key", "0x1234", "not a private key"),
    ("key", "0x" + "00" * 32, "not a valid secp256k1"),
    ("key", "0x" + "ff" * 32, "not a valid secp256k1"),
    ("sampling_rate", "1.5", "1.5 is not in (0, 1]"),
    ("sampling_rate", "0", "is not in (0, 1]"),
    ("sampling_rate", "abc", "'abc' is not a number"),
    ("sampling_rate", "nan", "is not a number"),
    ("replay_mode", "partial", "is not one of full, spot"),
    ("spot_ops", "0", "is not in [1,"),
    ("spot_ops", "2.5", "is not an integer"),
    ("spot_ops", "٣", "is not an integer"),
    ("backend", "cuda", "is not one of reference, triton"),
    ("metrics_host", "a b", "not a host"),
    ("metrics_port", "65536", "is not in [0, 65535]"),
    ("metrics_port", "-1", "is not in [0, 65535]"),
    ("poll_interval", "0", "is not > 0"),
    ("poll_interval", "1e999", "is not a finite number"),
    ("chain_retry_s", "-5", "is not > 0"),
    ("log_level", "verbose", "is not one of DEBUG"),
]


@pytest.mark.parametrize(("field", "text", "problem"), BAD_TEXT)
def test_bad_environment_value_names_field_and_source(field, text, problem):
    with pytest.raises(ConfigError) as info:
        load_config({}, env={env_name(field): text})
    message = str(info.value)
    assert message.startswith(f"{field} from {env_name(field)}: ")
    assert problem in message


@pytest.mark.parametrize(("field", "text", "problem"), [b for b in BAD_TEXT if b[0] != "key"])
def test_bad_flag_value_names_field_and_flag(field, text, problem):
    parser = argparse.ArgumentParser()
    add_node_arguments(parser)
    flag = {"state_path": "--state", "chain_retry_s": "--chain-retry"}.get(field, "--" + field.replace("_", "-"))
    ns = parser.parse_args([f"{flag}={text}"])
    with pytest.raises(ConfigError) as info:
        config_from_args(ns, env={})
    assert str(info.value).startswith(f"{field} from {flag}: ")
    assert problem in str(info.value)


BAD_TOML = [
    ("chain_url", 8545, "expected a string, got int"),
    ("initial_peers", "/ip4/1.2.3.4/tcp/1", "expected a list"),
    ("initial_peers", [1], "expected a string, got int"),
    ("key", 12, "expected a string"),
    ("sampling_rate", "0.5", "expected a number, got str"),
    ("sampling_rate", True, "expected a number, got bool"),
    ("sampling_rate", 2, "2 is not in (0, 1]"),
    ("sampling_rate", math.inf, "is not a finite number"),
    ("spot_ops", 1.0, "expected an integer, got float"),
    ("spot_ops", 0, "is not in [1,"),
    ("state_path", "", "must not be empty"),
    ("metrics_port", 99999, "is not in [0, 65535]"),
    ("poll_interval", math.nan, "is not a finite number"),
    ("poll_interval", 10**400, "is not a finite number"),
    ("log_level", ["INFO"], "expected a string"),
]


@pytest.mark.parametrize(("field", "value", "problem"), BAD_TOML)
def test_bad_toml_value_names_field_and_file(tmp_path, field, value, problem):
    path = tmp_path / "node.toml"
    path.write_text(toml_text({field: value}))
    with pytest.raises(ConfigError) as info:
        load_config({}, env={}, toml_path=str(path))
    assert str(info.value).startswith(f"{field} from config file {path}: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(("field", "value", "problem"), BAD_TOML)
def test_bad_direct_value(field, value, problem):
    with pytest.raises(ConfigError) as info:
        NodeConfig(**{field: value})
    assert str(info.value).startswith(f"{field} from NodeConfig: ")


def test_toml_file_errors(tmp_path, write_toml):
    path = write_toml({"sampling_rate": 0.5, "sampling_rat": 0.5, "colour": "blue"})
    with pytest.raises(ConfigError, match=r"unknown keys colour, sampling_rat \(known: chain_url"):
        load_config({}, env={}, toml_path=path)
    bad = tmp_path / "bad.toml"
    bad.write_text("sampling_rate = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, env={}, toml_path=str(bad))
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config({}, env={}, toml_path=str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="unknown settings bogus"):
        load_config({"bogus": 1}, env={})


def test_key_is_redacted_and_never_in_errors(tmp_path):
    c = load_config({}, env={"REFUTE_KEY": KEY})
    assert c.key == KEY and c.private_key() == KEY
    assert "5a5a" not in repr(c) and "5a5a" not in str(c)
    assert "key='<redacted>'" in repr(c)
    assert "key=None" in repr(NodeConfig())
    secret = "0x" + "5a" * 31 + "zz"  # malformed, still secret
    with pytest.raises(ConfigError) as info:
        load_config({}, env={"REFUTE_KEY": secret})
    assert "5a5a" not in str(info.value)
    key_file = tmp_path / "node.key"
    key_file.write_text("5a" * 31 + "zz\n")
    with pytest.raises(ConfigError) as info:
        NodeConfig(key_file=str(key_file)).private_key()
    assert str(info.value).startswith(f"key from key_file {key_file}: ") and "5a5a" not in str(info.value)


def test_private_key_sources(tmp_path):
    key_file = tmp_path / "node.key"
    key_file.write_text("\n  " + KEY.upper().replace("0X", "0x") + "  \n")
    assert NodeConfig(key_file=str(key_file)).private_key() == KEY
    assert NodeConfig(key=KEY[2:]).private_key() == KEY
    with pytest.raises(ConfigError, match="both set"):
        NodeConfig(key=KEY, key_file=str(key_file)).private_key()
    with pytest.raises(ConfigError, match="no private key"):
        NodeConfig().private_key()
    with pytest.raises(ConfigError, match="cannot read it"):
        NodeConfig(key_file=str(tmp_path / "missing.key")).private_key()


def test_argparse_flags(capsys):
    parser = argparse.ArgumentParser()
    add_node_arguments(parser)
    ns = parser.parse_args([])
    assert all(v is None for v in vars(ns).values())
    assert config_from_args(ns, env={}) == NodeConfig()
    for argv in (["--key", KEY], [f"--key={KEY}"], ["--key"]):  # keys never on the command line
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert "there is no --key flag" in err and KEY not in err
    ns = parser.parse_args([
        "--initial-peers", "/ip4/1.1.1.1/tcp/1", "--initial-peers", "/ip4/2.2.2.2/tcp/2,/ip4/3.3.3.3/tcp/3",
        "--state", "s.sqlite", "--chain-retry", "5", "--metrics-port", "0", "--key-file", "k",
    ])
    c = config_from_args(ns, env={"REFUTE_STATE_PATH": "env.sqlite", "REFUTE_SPOT_OPS": "3"})
    assert c.initial_peers == ("/ip4/1.1.1.1/tcp/1", "/ip4/2.2.2.2/tcp/2", "/ip4/3.3.3.3/tcp/3")
    assert (c.state_path, c.chain_retry_s, c.metrics_port, c.key_file, c.spot_ops) == ("s.sqlite", 5.0, 0, "k", 3)


def test_config_flag_reads_toml(write_toml):
    parser = argparse.ArgumentParser()
    add_node_arguments(parser)
    path = write_toml({"replay_mode": "spot", "spot_ops": 16})
    c = config_from_args(parser.parse_args(["--config", path, "--spot-ops", "32"]), env={})
    assert (c.replay_mode, c.spot_ops) == ("spot", 32)


_ENV_TEXT = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[+-]?[0-9]{0,6}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["0", "1", "nan", "inf", "-1", "0x" + "ab" * 32, "/ip4/1.2.3.4/tcp/1", "http://h:1", ","]),
)


@given(env=st.dictionaries(st.sampled_from([env_name(f) for f in FIELDS]), _ENV_TEXT, max_size=6))
def test_random_environment_only_config_errors(env):
    try:
        c = load_config({}, env=env)
    except ConfigError as exc:
        assert str(exc).split(" from ")[0] in FIELDS
        return
    assert 0 < c.sampling_rate <= 1 and 0 <= c.metrics_port <= 65535 and c.spot_ops >= 1
    assert math.isfinite(c.poll_interval) and c.poll_interval > 0


_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)


@given(values=st.dictionaries(st.sampled_from(FIELDS), _ANY, max_size=5))
def test_random_typed_values_only_config_errors(values):
    try:
        NodeConfig(**values)
    except ConfigError:
        pass
    try:
        load_config(values, env={})
    except ConfigError:
        pass


@given(values=st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), _ANY.filter(lambda v: v is not None), max_size=4))
def test_random_toml_only_config_errors(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("toml") / "node.toml"
    path.write_text(toml_text(values))
    try:
        load_config({}, env={}, toml_path=str(path))
    except ConfigError:
        pass
