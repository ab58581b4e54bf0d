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
@click.option("--record", type=click.Path(path_type=Path), default=None,
              help="Append every status report and finished download to this JSON Lines file.")
@click.option("--keys", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Keep the device key registry (trust on first use, last counters) in this "
              "JSON Lines file across restarts; default: in memory.")
@click.option("--per-address", type=click.IntRange(0, 100_000), default=32, show_default=True,
              help="Open connections allowed from one client address (0: no cap).")
@click.option("--grace", type=click.FloatRange(0, 86_400), default=30.0, show_default=True,
              help="On SIGTERM or Ctrl-C: seconds downloads in flight may take to finish before "
              "they are cut (a second signal cuts them at once).")
@handle_errors
def serve(site_path: Path, out_dir: Path, listen: tuple[str, ...], http_port: int | None,
          https_port: int | None, record: Path | None, keys: Path | None, per_address: int,
          grace: float) -> None:
    """Serve OUT and the site's installers to ONIE devices, and collect their status.

    Waterfall names (`onie-installer-<platform>` ...) get the installer the site assigns to
    the asking device (by ONIE's serial number and MAC headers); Range requests resume
    downloads; devices POST reports signed with their own keys to /status (registered on
    first contact; replays and changed keys are refused). The live status page is at /,
    the same data for scripts at /status.json (or `onie-builder status URL --json`).
    Idle connections time out and each address may hold --per-address of them.
    Every request is logged (address, device, method, path, status, bytes, seconds) and
    /metrics has Prometheus metrics. Stop with Ctrl-C or SIGTERM: new connections are refused
    at once, downloads in flight get --grace seconds, then the rest are cut; exit 0.
    """
    from builder.factory.limits import Limits
    from builder.factory.listener import Server, run_server
    from builder.factory.sitefile import check_site_files, load_site

    site, _ = load_site(site_path)
    check_site_files(site)
    server = Server(site, out_dir, listen=list(listen) or None, http_port=http_port,
                    https_port=https_port, record=record, keys=keys,
                    limits=Limits(per_address=per_address))

    def ready(urls: list[str]) -> None:
        click.echo(f"serving {out_dir} for site {site.name}: {' '.join(urls)}")
        click.echo(f"status page: {urls[0]}/", err=True)
        sys.stdout.flush()

    run_server(server, ready, grace)


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True,
              help="Print the server's status document as the result of the JSON envelope.")
@click.option("--cacert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="CA certificate to check an https:// server against.")
@handle_errors
def status(url: str, as_json: bool, cacert: Path | None) -> None:
    """Show the devices a running `onie-builder serve` at URL knows and their state."""
    from builder.factory.statusclient import fetch_status, format_status

    data = fetch_status(url, cacert)
    if as_json:
        emit(True, data)
    else:
        click.echo(format_status(data))


# --- signed installers (docs/signed-installer.md) ----------------------------------------------

