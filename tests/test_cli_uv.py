"""``sesim uv query``: the QUI of a simulated server, as a table or as JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from protocol import UvcCommand
from sesim._cli import main
from sesim.testbed import open_testbed

WIDE = {"COLUMNS": "200"}


def run(*args: str) -> Result:
    return CliRunner(env=WIDE).invoke(main, list(args))


def test_uv_query_prints_a_table_of_every_qui_field() -> None:
    result = run("uv", "query")
    assert result.exit_code == 0, result.output
    for name in ("inst_calls_list", "uv_base_stor_len", "max_guest_cpu_id", "supp_se_hdr_pcf", "0x040"):
        assert name in result.output
    assert "INIT_UV" in result.output and "SET_SHARED_ACCESS" not in result.output


async def test_uv_query_json_has_the_field_names_and_values_of_the_host_qui() -> None:
    result = run("uv", "query", "--format", "json", "--memory-mib", "4096")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    async with open_testbed() as tb:
        qui = tb.qui()
    assert data["rc"] == 1 and data["cc"] == 0
    assert data["uv_base_stor_len"] == qui.uv_base_stor_len
    assert data["cpu_stor_len"] == qui.cpu_stor_len
    assert int(data["inst_calls_list"], 16) == qui.inst_calls_list
    assert "CREATE_SEC_CONF" in data["installed_calls"]
    assert all(UvcCommand[name].qui_bit is not None for name in data["installed_calls"])


def test_uv_query_has_help() -> None:
    result = run("uv", "query", "--help")
    assert result.exit_code == 0
    assert "--format" in result.output and "--memory-mib" in result.output


def test_uv_query_refuses_a_format_it_does_not_know() -> None:
    result = run("uv", "query", "--format", "yaml")
    assert result.exit_code == 2
