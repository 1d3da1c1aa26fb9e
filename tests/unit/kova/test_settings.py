"""kova.settings: options generated from settings dataclasses (defaults
written once), environment variables derived from one prefix, one "off"
convention, and usage errors (never tracebacks) for bad values."""

from __future__ import annotations

from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from kova import settings as ks
from kova.cli import main


@dataclass
class Demo:
    placement_url: str = ks.setting("http://p:8778", "Where Placement is.")
    workers: int = ks.setting(4, "Workers.", type=click.IntRange(min=1))
    metrics_port: int = ks.setting(9090, "Metrics (0: off).", type=click.IntRange(min=-1),
                                   convert=ks.off_if_negative)
    shared: str = ks.setting("kova-system", "A shared name.", env="KOVA_SHARED",
                             env_aliases=("KOVA_OLD_SHARED",))
    fenced: bool = ks.setting(True, "A switch.")
    names: tuple[str, ...] = ks.setting(factory=tuple, help="Repeatable.", flag="--name")
    log_level: str = ks.level_setting()


@click.command()
@ks.options(Demo, "KOVA_DEMO_")
def demo(settings: Demo) -> None:
    click.echo(repr(settings))


def run(*args: str, env: dict[str, str] | None = None) -> Demo:
    result = CliRunner().invoke(demo, list(args), env=env or {})
    assert result.exit_code == 0, result.output
    return eval(result.output, {"Demo": Demo})  # noqa: S307 - our own repr


def test_defaults_come_from_the_dataclass():
    assert run() == Demo()


def test_flag_beats_environment_beats_default():
    env = {"KOVA_DEMO_WORKERS": "8", "KOVA_DEMO_PLACEMENT_URL": "http://env"}
    assert run(env=env).workers == 8
    got = run("--workers", "2", env=env)
    assert got.workers == 2 and got.placement_url == "http://env"


def test_shared_variable_and_its_older_names():
    assert run(env={"KOVA_SHARED": "a"}).shared == "a"
    assert run(env={"KOVA_DEMO_SHARED": "b"}).shared == "b"  # the derived name too
    assert run(env={"KOVA_OLD_SHARED": "c"}).shared == "c"
    assert run("--shared", "d", env={"KOVA_OLD_SHARED": "c"}).shared == "d"


def test_zero_is_off_and_negative_ports_are_taken_as_zero():
    assert run("--metrics-port", "0").metrics_port == 0
    assert run("--metrics-port", "-1").metrics_port == 0


def test_booleans_and_repeated_flags():
    assert run("--no-fenced").fenced is False
    assert run(env={"KOVA_DEMO_FENCED": "false"}).fenced is False
    assert run("--name", "a", "--name", "b").names == ("a", "b")


def test_help_shows_defaults_but_not_default_factories():
    text = CliRunner().invoke(demo, ["--help"], terminal_width=200).output
    assert "default: 4" in text and "<class" not in text, text
    for argv in (["operator", "run"], ["agent", "run"], ["placement", "serve"]):
        text = CliRunner().invoke(main, [*argv, "--help"]).output
        assert "<class" not in text and "<function" not in text, (argv, text)


@pytest.mark.parametrize("args", [["--workers", "0"], ["--log-level", "loud"],
                                  ["--metrics-port", "x"]])
def test_bad_values_are_usage_errors_naming_the_flag(args):
    result = CliRunner().invoke(demo, args)
    assert result.exit_code == 2, result.output
    assert args[0] in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("argv", [["operator", "run"], ["agent", "run", "--host", "h"],
                                  ["placement", "serve", "--no-auth"], ["api", "serve"]])
def test_components_refuse_a_bad_log_level_with_a_usage_error(argv):
    result = CliRunner().invoke(main, [*argv, "--log-level", "verbose"])
    assert result.exit_code == 2, result.output
    assert "--log-level" in result.output and "'verbose' is not one of" in result.output


def test_operator_filters_are_checked():
    result = CliRunner().invoke(main, ["operator", "run", "--filters", "Nope"])
    assert result.exit_code == 2 and "unknown filter" in result.output, result.output


def test_every_option_has_help_and_a_derived_or_declared_variable():
    from kova.agents.settings import PREFIX as AGENT
    from kova.agents.settings import AgentSettings
    from kova.api.settings import PREFIX as API
    from kova.api.settings import ApiSettings
    from kova.operator.settings import PREFIX as OPERATOR
    from kova.operator.settings import Settings
    from kova.placement.settings import PREFIX as PLACEMENT
    from kova.placement.settings import PlacementSettings

    for cls, prefix in ((Settings, OPERATOR), (AgentSettings, AGENT),
                        (PlacementSettings, PLACEMENT), (ApiSettings, API)):
        for opt in ks.describe(cls, prefix):
            assert opt.spec.help, (cls.__name__, opt.field)
            assert opt.env == prefix + opt.field.upper() or opt.spec.env, opt
            if opt.spec.env:  # a kept name reads the derived one too
                assert prefix + opt.field.upper() in opt.env_aliases, opt
        table = ks.reference(cls, prefix)
        assert table.count("\n") == len(ks.describe(cls, prefix)) + 2


def test_the_settings_tables_in_the_docs_are_up_to_date():
    from kova.dev.settings_docs import check

    problems = check()
    assert not problems, "run `python -m kova.dev.settings_docs`: " + "; ".join(problems)



@dataclass
class Needs:
    cert_file: str = ks.setting("", "A file the command cannot run without.", required=True)


def test_a_required_setting_is_a_usage_error_and_documented():
    @click.command()
    @ks.options(Needs, "KOVA_NEEDS_")
    def needs(settings: Needs) -> None:
        click.echo(settings.cert_file)

    missing = CliRunner().invoke(needs, [])
    assert missing.exit_code == 2 and "Missing option '--cert-file'" in missing.output
    assert CliRunner().invoke(needs, [], env={"KOVA_NEEDS_CERT_FILE": "x"}).output == "x\n"
    assert "| `--cert-file` | `KOVA_NEEDS_CERT_FILE` | required |" in ks.reference(
        Needs, "KOVA_NEEDS_")


def test_api_serve_needs_its_certificates_and_splits_allowed_names(tmp_path):
    result = CliRunner().invoke(main, ["api", "serve"])
    assert result.exit_code == 2 and "Missing option '--tls-cert-file'" in result.output
    from kova.api.settings import _names

    assert _names(("front-proxy-client,aggregator", " other ")) == (
        "front-proxy-client", "aggregator", "other")
