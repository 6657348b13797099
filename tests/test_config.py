"""Run configurations: valid files run, bad keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sesim._cli import main
from sesim._config import ConfigError, load_config, parse_config
from sesim._scenarios import SCENARIO_NAMES, scenario

GOOD = """
strategy = "random"

[server]
name = "z15-t"
memory_mib = 3072
cpus = 2

[[guest]]
name = "alpha"
secure = true
memory_mib = 16
cpus = 2
workload = ["write 0x100000 pages=2", "read 0x100000 pages=2"]

[[guest]]
name = "plain"
secure = false
memory_mib = 8
cpus = 1
workload = ["write 0x0 pages=1", "read 0x0"]
"""


def test_a_valid_configuration_loads(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.server == "z15-t"
    assert [g.name for g in config.guests] == ["alpha", "plain"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"strategi": "pct"}, "config.strategi: unknown key"),
        ({"server": {"memroy_mib": 4096}}, "server.memroy_mib: unknown key"),
        ({"server": {"cpus": "two"}}, "server.cpus: must be an integer"),
        ({"server": {"memory_mib": 100}}, "server.memory_mib: must be"),
        ({"guest": [{"name": "a", "cpu": 1}]}, "guest[0].cpu: unknown key"),
        ({"guest": [{"name": "a", "workload": ["jump 0x1000"]}]}, "guest[0].workload[0]: workload operation"),
        ({"guest": [{"name": "a", "memory_mib": 1, "workload": ["write 0x200000"]}]}, "reaches beyond"),
        ({"guest": [{"name": "a"}, {"name": "a"}]}, "guest[1].name: 'a' is used twice"),
        ({"guest": [{"name": "a", "secure": False, "image_for": "x"}]}, "need secure = true"),
        ({"guest": []}, "no [[guest]] defined"),
        ({"strategy": "fifo"}, "config.strategy: must be 'random' or 'pct'"),
        ({"host_thread": [{"kind": "reader", "guest": "b", "addresses": [0]}]}, "host_thread[0].guest: no guest named 'b'"),
        ({"host_thread": [{"kind": "spy", "guest": "a", "addresses": [0]}]}, "unknown host thread 'spy'"),
        ({"host_thread": [{"kind": "reader", "guest": "a"}]}, "needs at least one guest address"),
        ({"host_thread": [{"kind": "pinner", "guest": "a", "addresses": [0x100001]}]}, "must be page-aligned"),
        ({"host_thread": [{"kind": "reader", "guest": "a", "addresses": ["x"]}]}, "addresses[0]: must be a guest address"),
        ({"faults": {"fail_uvcs": ["CREATE_SEC_CPU"]}}, "faults.fail_uvcs: 'CREATE_SEC_CPU' is not COMMAND:N"),
        ({"faults": {"fail_uvcs": ["NO_SUCH_UVC:1"]}}, "is not COMMAND:N"),
        ({"faults": {"uv_partial": 101}}, "faults.uv_partial: must be 0..100"),
        ({"guest": [{"name": "a", "cleanup_delay": 1000}]}, "need teardown = \"async\""),
    ],
)
def test_a_bad_key_is_named(change: dict[str, object], named: str) -> None:
    data: dict[str, object] = {"guest": [{"name": "a"}]}
    data.update(change)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_config(data)


def test_sesim_run_runs_a_configuration_and_writes_its_trace(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["run", str(path), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "halted" in result.output
    assert (tmp_path / "run.jsonl").read_bytes().startswith(b'{"config"')


def test_sesim_run_reports_a_bad_configuration_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nmemroy = 1\n[[guest]]\nname = "a"\n')
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1
    assert "server.memroy: unknown key" in result.output
    assert "Traceback" not in result.output


def test_sesim_run_reports_broken_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1 and "not valid TOML" in result.output


def test_sesim_run_boots_an_image_made_by_sesim_image_create(tmp_path: Path) -> None:
    runner = CliRunner()
    pki = tmp_path / "pki"
    assert runner.invoke(main, ["hostkey", "pki", str(pki), "--host", "z15-t"]).exit_code == 0
    kernel = tmp_path / "kernel"
    assert runner.invoke(main, ["image", "kernel", "-o", str(kernel), "--size", "128K"]).exit_code == 0
    image = tmp_path / "guest.img"
    created = runner.invoke(
        main,
        ["image", "create", "-i", str(kernel), "-o", str(image), "-k", str(pki / "z15-t.crt"), "--no-verify"],
    )
    assert created.exit_code == 0, created.output
    config = GOOD.replace('name = "z15-t"', f'name = "z15-t"\nhost_key = "{pki / "z15-t.key"}"').replace(
        "secure = true\n", f'secure = true\nimage = "{image}"\n'
    )
    path = tmp_path / "run.toml"
    path.write_text(config)
    result = runner.invoke(main, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "refused" not in result.output


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_race_scenario_is_a_configuration_that_survives_its_toml_form(name: str) -> None:
    """Replay rebuilds a run from its trace header: a scenario must be all configuration."""
    config = scenario(name).build(3)
    assert parse_config(config.to_json()) == config


def test_host_threads_fault_sites_and_cleanup_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        GOOD.replace('memory_mib = 16', 'memory_mib = 3072\nteardown = "async"\ncleanup_delay = 5000\ncleanup_killed_after = 2')
        + '[faults]\nuv_partial = 5\nfail_uvcs = ["CREATE_SEC_CPU:2"]\n'
        + '[[host_thread]]\nkind = "reader"\nguest = "alpha"\naddresses = [0x100000]\nrounds = 3\n'
    )
    config = load_config(path)
    alpha = config.guests[0]
    assert (alpha.cleanup_delay, alpha.cleanup_killed_after) == (5000, 2)
    assert config.faults.uv_partial == 5 and config.faults.fail_uvcs == ("CREATE_SEC_CPU:2",)
    thread = config.host_threads[0]
    assert (thread.kind, thread.guest, thread.gfns, thread.rounds) == ("reader", "alpha", (0x100,), 3)
