"""Settings: sources and their order, validation naming the key, the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import SessionOptions, Settings, describe_settings, unknown_variables
from gateway.errors import ConfigError
from tests.conftest import ROOT


def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.models == ROOT / "models"
    assert settings.session == SessionOptions()


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'host = "0.0.0.0"\nport = 7000\nlog_level = "debug"\n'
        "[session]\nintra_op_threads = 3\ninter_op_threads = 2\n"
    )
    environ = {
        "GATEWAY_CONFIG_FILE": str(config),
        "GATEWAY_PORT": "7100",
        "GATEWAY_SESSION_INTRA_OP_THREADS": "4",
        "GATEWAY_WARMUP": "off",
    }
    settings = Settings.load(environ=environ, flags={"port": 7200, "host": None})
    assert settings.port == 7200  # flag
    assert settings.host == "0.0.0.0"  # file (the flag was not given)
    assert settings.log_level == "debug"
    assert settings.session.intra_op_threads == 4  # environment over file, key by key
    assert settings.session.inter_op_threads == 2  # file
    assert settings.warmup is False


@pytest.mark.parametrize(
    ("environ", "phrase"),
    [
        ({"GATEWAY_PORT": "eighty"}, "port: invalid value 'eighty'"),
        ({"GATEWAY_PORT": "70000"}, "port: invalid value 70000"),
        ({"GATEWAY_LOG_LEVEL": "loud"}, "log_level: invalid value 'loud'"),
        ({"GATEWAY_WARMUP": "maybe"}, "warmup: invalid value 'maybe'"),
        ({"GATEWAY_SESSION_GRAPH_OPTIMIZATION_LEVEL": "max"}, "graph_optimization_level"),
        ({"GATEWAY_SESSION_INTRA_OP_THREADS": "-1"}, "intra_op_threads"),
        ({"GATEWAY_MAX_TENSOR_ELEMENTS": "0"}, "max_tensor_elements"),
        ({"GATEWAY_CONFIG_FILE": "/nonexistent/gateway.toml"}, "config_file: cannot read"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], phrase: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=environ)
    assert phrase in str(info.value)


def test_unknown_and_malformed_file_keys(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'prot'"):
        Settings.load(environ={}, flags={"config_file": config})
    config.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(environ={}, flags={"config_file": config})
    config.write_text("[session]\nthreads = 2\n")
    with pytest.raises(ConfigError, match="session: unknown key 'threads'"):
        Settings.load(environ={}, flags={"config_file": config})


def test_execution_providers_from_a_comma_list() -> None:
    environ = {"GATEWAY_SESSION_EXECUTION_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider"}
    settings = Settings.load(environ=environ)
    assert settings.session.execution_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_readme_settings_table_is_generated_from_the_fields() -> None:
    readme = (ROOT / "README.md").read_text()
    for key, env, default, doc in describe_settings():
        row = f"| `{key}` | `{env}` | {f'`{default}`' if default else ''} | {doc} |"
        assert row in readme, f"README settings table lacks or misstates: {row}"


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    environ = {
        "GATEWAY_PROT": "9000",
        "GATEWAY_SESSION_INTRA_OP_THREAD": "2",
        "GATEWAY_WHATEVER": "1",
        "GATEWAY_PORT": "9001",
        "GATEWAY_SESSION_INTER_OP_THREADS": "2",
        "GATEWAY_VENV": ".venv",  # scripts/test's
        "OTEL_SERVICE_NAME": "x",
    }
    assert unknown_variables(environ) == [
        "GATEWAY_PROT is not a setting and is ignored; did you mean GATEWAY_PORT?",
        "GATEWAY_SESSION_INTRA_OP_THREAD is not a setting and is ignored; "
        "did you mean GATEWAY_SESSION_INTRA_OP_THREADS?",
        "GATEWAY_WHATEVER is not a setting and is ignored",
    ]
    settings = Settings.load(environ=environ)
    assert settings.port == 9001 and settings.session.inter_op_threads == 2
    assert unknown_variables({f"GATEWAY_{f.upper()}": "" for f in ("models", "port")}) == []
