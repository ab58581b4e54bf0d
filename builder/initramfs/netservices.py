"""The network services discovery uses besides its methods: IPv4 link-local addressing
(RFC 3927, with the address defended), the clock (SNTP from DHCP option 42 and the recipe, then
the hardware clock) and remote syslog (DHCP option 7 and the recipe: discovery's lines and the
installer's output). ``template_values`` hands their build-time values to
``templates/guest/discovery/lib/netservices.sh.j2`` and ``lib/linklocal.sh.j2``; see
docs/discovery.md ("Link-local", "Clock", "Remote syslog") and docs/transports.md ("Clock")."""

from __future__ import annotations

from typing import Any

from builder.recipe.model import Recipe

# RFC 3927 section 9: the timing constants, in seconds (PROBE_WAIT, PROBE_NUM, ANNOUNCE_WAIT,
# ANNOUNCE_NUM, ANNOUNCE_INTERVAL) and MAX_CONFLICTS before the rate limit.
PROBE_WAIT, PROBE_NUM = 1, 3
ANNOUNCE_WAIT, ANNOUNCE_NUM, ANNOUNCE_INTERVAL = 2, 2, 2
MAX_CONFLICTS = 10
DEFEND_INTERVAL = 10  # section 2.5: a second conflict within this gives the address up
# Ours, not the RFC's: BusyBox cannot hear ARP passively, so the claimed address is probed for
# (arping -D) this often; a conflict is noticed within about this long.
WATCH_INTERVAL = 2
# ONIE's neighbour sweep pings the limited broadcast address this many times.
SWEEP_PINGS = 3
RDATE = "/usr/sbin/rdate"  # Debian's rdate (SNTP with -n); BusyBox 1.35 in Debian has no ntpd


def template_values(recipe: Recipe, source_date_epoch: int) -> dict[str, Any]:
    """What the link-local, clock and syslog pieces of the discovery script render."""
    d = recipe.discovery
    return {
        "netservices": {
            "link_local": d.link_local,
            "ntp": list(d.ntp),
            "syslog": list(d.syslog),
            "build_epoch": source_date_epoch,
            "rdate": RDATE,
            "probe_wait": PROBE_WAIT,
            "probe_num": PROBE_NUM,
            "announce_wait": ANNOUNCE_WAIT,
            "announce_num": ANNOUNCE_NUM,
            "announce_interval": ANNOUNCE_INTERVAL,
            "max_conflicts": MAX_CONFLICTS,
            "defend_interval": DEFEND_INTERVAL,
            "watch_interval": WATCH_INTERVAL,
            "sweep_pings": SWEEP_PINGS,
        },
    }
