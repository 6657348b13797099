"""``sesim uv``: look at a simulated server's ultravisor.

``sesim uv query`` prints the QUI block (uv-interface.md §5) of a fresh
testbed server as the host sees it: a rich table, or JSON with the field
names of ``struct uv_cb_qui``. The command only parses options and asks
:class:`sesim.testbed.Testbed` for the parsed block.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from protocol import QuiResponse, UvcCommand, UvFeature

from .testbed import Testbed

_MEANING = {
    "inst_calls_list": "installed UV calls (QUI bits)",
    "uv_base_stor_len": "storage donated once to INIT_UV",
    "conf_base_phys_stor_len": "per configuration, physically contiguous",
    "conf_base_virt_stor_len": "per configuration, fixed part of the variable storage",
    "conf_virt_var_stor_len": "per configuration, per 1 MiB of guest memory",
    "cpu_stor_len": "per secure CPU",
    "max_num_sec_conf": "most secure configurations",
    "max_guest_stor_addr": "highest guest storage address",
    "max_guest_cpu_id": "highest secure CPU number (CPUs = id + 1)",
    "uv_feature_indications": "UV features",
    "supp_se_hdr_versions": "SE header versions accepted",
    "supp_se_hdr_pcf": "SE header plaintext control flags accepted",
    "conf_dump_storage_state_len": "dump: storage state per 1 MiB",
    "conf_dump_finalize_len": "dump: completion data",
    "supp_att_req_hdr_ver": "attestation request versions",
    "supp_att_pflags": "attestation plaintext flags",
    "supp_add_secret_req_ver": "add-secret request versions",
    "supp_add_secret_pcf": "add-secret plaintext flags",
    "supp_secret_types": "secret types",
    "max_assoc_secrets": "most associated secrets",
    "max_retr_secrets": "most retrievable secrets",
}


def _installed(qui: QuiResponse) -> list[str]:
    return [c.name for c in sorted(qui.installed_commands, key=lambda c: c.qui_bit or 0)]


def _features(qui: QuiResponse) -> list[str]:
    return [f.name for f in UvFeature if qui.has_feature(f)]


def qui_as_dict(qui: QuiResponse) -> dict[str, Any]:
    """The QUI fields by name; bitmaps also as the names of what they show."""
    out: dict[str, Any] = {"cc": int(qui.cc), "rc": int(qui.rc), "length": qui.length}
    for f in qui.FIELDS:
        out[f.name] = getattr(qui, f.name)
    out["inst_calls_list"] = f"{qui.inst_calls_list:064x}"
    out["installed_calls"] = _installed(qui)
    out["features"] = _features(qui)
    return out


def qui_table(qui: QuiResponse, title: str) -> Table:
    """One row per QUI field: offset, name, value, meaning."""
    table = Table(title=title)
    table.add_column("offset", justify="right")
    table.add_column("field", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("meaning", overflow="fold")
    for f in qui.FIELDS:
        value = getattr(qui, f.name)
        if f.name == "inst_calls_list":
            shown = "\n".join(f"{UvcCommand[name].qui_bit:>2} {name}" for name in _installed(qui))
        elif f.name == "uv_feature_indications":
            shown = f"{value:#018x} " + (", ".join(_features(qui)) or "(none)")
        else:
            shown = f"{value:#x}" if value >= 10 else str(value)
        table.add_row(f"{f.offset:#05x}", f.name, shown, _MEANING.get(f.name, ""))
    return table


@click.group()
def uv() -> None:
    """Look at the ultravisor of a simulated server."""


@uv.command()
@click.option(
    "--memory-mib", type=click.IntRange(min=1), default=2200, show_default=True, help="Host memory of the server."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table, or JSON with the field names of struct uv_cb_qui.",
)
def query(memory_mib: int, fmt: str) -> None:
    """Print the QUI block of a simulated server, as its host sees it (uv-interface.md §5)."""
    qui = Testbed(memory_mib=memory_mib, cpus=1).qui()
    if fmt == "json":
        click.echo(json.dumps(qui_as_dict(qui), indent=2))
        return
    Console(soft_wrap=True).print(qui_table(qui, f"QUI of a simulated server ({memory_mib} MiB)"))
