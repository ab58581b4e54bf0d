"""Factory commands: `dhcp-config`, `serve` and `status`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from builder.cli.common import (
    find_recipe_file,
    handle_errors,
    load,
    platform_files,
)
from builder.cli.envelope import emit
from builder.factory.statusclient import STATES


@click.command("dhcp-config")
@click.argument("names", nargs=-1)
@click.option("--site", "site_path", required=True, type=click.Path(path_type=Path),
              help="The site file (subnets, server, devices).")
@click.option("--format", "fmt", type=click.Choice(["dnsmasq", "kea", "isc"]), default="dnsmasq",
              show_default=True, help="The DHCP server to configure.")
@click.option("--family", type=click.Choice(["4", "6"]), default="4", show_default=True,
              help="Kea and ISC dhcpd run one daemon per IP family; dnsmasq serves both.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the configuration here (atomically) instead of to stdout.")
@handle_errors
def dhcp_config(names: tuple[str, ...], site_path: Path, fmt: str, family: str,
                output: Path | None) -> None:
    """Write a DHCP server configuration for the site's ONIE devices.

    Every platform of the named recipes (default: all) and of the site file gets a class on
    vendor class `onie_vendor:<platform>` answering option 114 and VIVSO 125 with its installer
    URL on the `serve` server; devices with a MAC get host entries. See docs/factory.md.
    """
    from builder.factory.dhcp import DhcpFormat, render_dhcp_config
    from builder.factory.sitefile import load_site

    site, _ = load_site(site_path)
    paths = ([find_recipe_file(n) for n in names] if names
             else platform_files())
    platforms = [load(p)[0].platform_string for p in paths]
    text = render_dhcp_config(site, platforms, DhcpFormat(fmt), int(family))
    if output is None:
        click.echo(text, nl=False)
        return
    from builder.components.cache import write_atomic

    write_atomic(output, text.encode())
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.option("--site", "site_path", required=True, type=click.Path(path_type=Path),
              help="The site file (assignments, TLS material, status reports).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="The build output tree to serve.")
@click.option("--listen", multiple=True, help="Address to listen on (repeat for several; "
              "default: the site's server.listen).")
@click.option("--http-port", type=int, default=None, help="Override server.http_port (0: any).")
@click.option("--https-port", type=int, default=None, help="Override server.https_port (0: any).")
@click.option("--db", "database", default=None, metavar="URL",
              help="The state database (devices, their history, device keys): "
              "sqlite:///PATH or postgresql://USER@HOST[:PORT]/NAME; default: the site file's "
              "'database:', else <site-file-stem>.db beside the site file.")
@click.option("--per-address", type=click.IntRange(0, 100_000), default=32, show_default=True,
              help="Open connections allowed from one client address (0: no cap).")
@click.option("--grace", type=click.FloatRange(0, 86_400), default=30.0, show_default=True,
              help="On SIGTERM or Ctrl-C: seconds downloads in flight may take to finish before "
              "they are cut (a second signal cuts them at once).")
@handle_errors
def serve(site_path: Path, out_dir: Path, listen: tuple[str, ...], http_port: int | None,
          https_port: int | None, database: str | None, per_address: int,
          grace: float) -> None:
    """Serve OUT and the site's installers to ONIE devices, and collect their status.

    Waterfall names (`onie-installer-<platform>` ...) get the installer the site assigns to
    the asking device (by ONIE's serial number and MAC headers); Range requests resume
    downloads; devices POST reports signed with their own keys to /status (registered on
    first contact; replays and changed keys are refused). Devices, their history and keys
    live in the state database (--db), so a restart forgets nothing and several servers
    may share one PostgreSQL database. The live status page is at /, the same data for
    scripts at /status.json and /status/<key>.json (or `onie-builder status URL --json`).
    Idle connections time out and each address may hold --per-address of them.
    Every request is logged (address, device, method, path, status, bytes, seconds) and
    /metrics has Prometheus metrics. Stop with Ctrl-C or SIGTERM: new connections are refused
    at once, downloads in flight get --grace seconds, then the rest are cut; exit 0.
    """
    from builder.factory.db.engine import default_url, normalize_url
    from builder.factory.limits import Limits
    from builder.factory.listener import Server, run_server
    from builder.factory.sitefile import check_site_files, load_site

    site, _ = load_site(site_path)
    check_site_files(site)
    url = normalize_url(database or site.database or default_url(site_path), site_path.parent)
    server = Server(site, out_dir, listen=list(listen) or None, http_port=http_port,
                    https_port=https_port, database=url, limits=Limits(per_address=per_address))

    def ready(urls: list[str]) -> None:
        click.echo(f"serving {out_dir} for site {site.name}: {' '.join(urls)}")
        click.echo(f"status page: {urls[0]}/", err=True)
        sys.stdout.flush()

    run_server(server, ready, grace)


@click.command()
@click.argument("url")
@click.option("--state", type=click.Choice(STATES), default=None,
              help="Show only the devices in this state.")
@click.option("--filter", "text", metavar="TEXT", default=None,
              help="Show only the devices whose name, serial, MAC, platform, address, state or "
              "reason contains every word of TEXT (any case), as the page's filter box.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the server's status document, its devices ordered and filtered as the "
              "table, as the result of the JSON envelope.")
@click.option("--cacert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="CA certificate to check an https:// server against.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to wait for the server's answer.")
@handle_errors
def status(url: str, state: str | None, text: str | None, as_json: bool, cacert: Path | None,
           timeout: float) -> None:
    """Show the devices of the `onie-builder serve` at URL, failures first.

    One line per device of the site file (seen or not) and per device that reported:
    failed, conflict, silent, downloading, installing, discovering, waiting, installed, then
    by name; the same order and filter as the status page at URL/.
    """
    from builder.factory.statusclient import fetch_status, format_status, select

    data = fetch_status(url, cacert, timeout)
    devices = select(data["devices"], state, text)
    if as_json:
        emit(True, {**data, "devices": devices})
    else:
        click.echo(format_status(data, devices))


# --- signed installers (docs/signed-installer.md) ----------------------------------------------

