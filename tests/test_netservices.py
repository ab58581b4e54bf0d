"""Link-local addressing, the clock and remote syslog (builder/initramfs/netservices.py and
templates/guest/discovery/lib/{linklocal,netservices}.sh.j2): the recipe keys with their exact
messages, the DHCP request, and the script's functions under the host's BusyBox ash."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.initramfs.discovery import DHCP_FIELDS, REQUEST_OPTIONS
from builder.initramfs.netservices import template_values
from builder.recipe.load import load_recipe
from tests.netservices import NTP_EPOCH_OFFSET, sntp_answer
from tests.test_discovery import RECIPES, ash, kvm

EPOCH = 1_700_000_000  # 2023-11-14, the build time the script compares the clock with


def recipe_with(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"extends: {RECIPES / 'kvm_x86_64.yaml'}\ndiscovery:\n  {block}\n")
    return path


def test_recipe_keys_reach_the_script(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_with(tmp_path, "ntp: [10.0.0.5, time.lab]\n  syslog: [10.0.0.6:5140, "
                                               "logs.lab]\n  link_local: false"))[0]
    values = template_values(recipe, EPOCH)["netservices"]
    assert (values["ntp"], values["syslog"], values["link_local"]) == (
        ["10.0.0.5", "time.lab"], ["10.0.0.6:5140", "logs.lab"], False)
    assert template_values(kvm(), EPOCH)["netservices"]["link_local"] is True
    assert 42 in REQUEST_OPTIONS and 7 in REQUEST_OPTIONS
    assert {"ntpsrv", "opt7"} <= set(DHCP_FIELDS)


@pytest.mark.parametrize(("block", "message"), [
    ("ntp: ['10.0.0.5;reboot']",
     "discovery.ntp[0]: expected an IPv4 address or a host name, got '10.0.0.5;reboot'"),
    ("syslog: ['logs.lab:99999']",
     "discovery.syslog[0]: expected HOST or HOST:PORT (port 1-65535), got 'logs.lab:99999'"),
    ("syslog: ['-R x']", "discovery.syslog[0]: expected HOST or HOST:PORT (port 1-65535), got '-R x'"),
    ("syslog: ['a:']", "discovery.syslog[0]: expected HOST or HOST:PORT (port 1-65535), got 'a:'"),
    ("link_local: maybe", "discovery.link_local: expected true or false, got 'maybe'"),
])
def test_bad_keys(tmp_path: Path, block: str, message: str) -> None:
    path = recipe_with(tmp_path, block)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [message]
    assert info.value.problems[0].startswith(f"{path}:3: ")


def test_linklocal_addresses_follow_the_mac_and_stay_in_range(tmp_path: Path) -> None:
    body = ("linklocal_seed_from() { local IFS=:; set -- $1\n"
            " RANDOM=$(( (0x$1$2$3 << 7 ^ 0x$4$5$6) + 1 )); }\n"
            "for mac in 52:54:00:12:34:56 52:54:00:12:34:57; do linklocal_seed_from $mac\n"
            " i=0; while [ $i -lt 50 ]; do linklocal_pick; echo $LL_ADDR; i=$((i + 1)); done; done")
    out = ash(tmp_path, body).stdout.split()
    first, second = out[:50], out[50:]
    assert first != second and len(set(first)) > 40
    again = ash(tmp_path, body).stdout.split()
    assert again == out  # the same MAC picks the same addresses on every boot (RFC 3927 2.1)
    for addr in out:
        a, b, c, d = (int(x) for x in addr.split("."))
        assert (a, b) == (169, 254) and 1 <= c <= 254 and 0 <= d <= 255


def test_the_seed_comes_from_the_interfaces_mac(tmp_path: Path) -> None:
    out = ash(tmp_path, "linklocal_seed lo; linklocal_pick; echo $LL_ADDR; "
                        "linklocal_seed lo; linklocal_pick; echo $LL_ADDR").stdout.split()
    assert out[0] == out[1] and out[0].startswith("169.254.")


@pytest.mark.parametrize(("clock", "reason", "blamed"), [
    ("978307200", "verify error:num=9:certificate is not yet valid", True),  # 2001, before the build
    ("978307200", "verify error:num=10:certificate has expired", True),
    ("978307200", "verify error:num=19:self-signed certificate in certificate chain", False),
    ("1800000000", "verify error:num=9:certificate is not yet valid", False),  # after the build
])
def test_clock_blame(tmp_path: Path, clock: str, reason: str, blamed: bool) -> None:
    body = (f"BUILD_EPOCH={EPOCH}\n"
            f"date() {{ case $* in +%s) echo {clock} ;; *) echo 2001-01-01 ;; esac; }}\n"
            f"clock_blame '{reason}'")
    out = ash(tmp_path, body).stdout
    if blamed:
        assert out == (" (the clock is the cause: it reads 2001-01-01, before this image was built"
                       " on 2001-01-01, and no NTP server set it: offer DHCP option 42 or set"
                       " discovery.ntp)")
    else:
        assert out == ""
    assert ash(tmp_path, f"CLOCK_SET=10.0.0.5; BUILD_EPOCH={EPOCH}; date() {{ echo {clock}; }}\n"
                         f"clock_blame '{reason}'").stdout == ""


def test_clock_blame_names_the_build_date(tmp_path: Path) -> None:
    body = (f"BUILD_EPOCH={EPOCH}\n"
            'date() { case $* in +%s) echo 978307200 ;; *) command date "$@" ;; esac; }\n'
            "clock_blame 'certificate is not yet valid'")
    out = ash(tmp_path, body).stdout
    assert "before this image was built on 2023-11-14" in out


@pytest.mark.parametrize(("server", "ok"), [
    ("10.0.0.6", True), ("10.0.0.6:5140", True), ("logs.lab:514", True), ("logs.lab", True),
    ("10.0.0.6:0", False), ("10.0.0.6:65536", False), ("10.0.0.6:", False), ("-R", False),
    ("a;reboot", False), ("$(reboot)", False),
])
def test_log_servers_are_checked(tmp_path: Path, server: str, ok: bool) -> None:
    out = ash(tmp_path, 'is_log_server "$S" && echo yes || echo no', env={"S": server})
    assert out.stdout.strip() == ("yes" if ok else "no")


def test_hostile_servers_from_dhcp_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = ('disco_ntpsrv="$V"; LOG_SERVERS="$V"; LOG=/dev/null; RDATE=false; CONNECT_TIMEOUT=1\n'
            "clock_sync; syslog_start; echo CLOCK=$CLOCK_SET SYSLOG=$SYSLOG_ON")
    out = ash(tmp_path, body, env={"V": f"$(touch {marker}) `touch {marker}` ;touch {marker}"})
    assert not marker.exists()
    assert out.stdout.splitlines()[-1] == "CLOCK= SYSLOG="
    assert "reject ntp server ??touch (not an address or host name)" in out.stdout
    assert "reject log server ??touch (not HOST or HOST:PORT)" in out.stdout


def test_waterfall_tries_onie_server_after_the_dhcp_servers(tmp_path: Path) -> None:
    body = ("disco_siaddr=10.0.0.2; disco_tftp=tftp.lab; disco_opt150=0a000003\n"
            'tftp_servers "$SERVER_NAME"; echo $TFTP_LIST; tftp_servers; echo $TFTP_LIST')
    assert ash(tmp_path, body).stdout.splitlines() == [
        "10.0.0.2 tftp.lab 10.0.0.3 onie-server", "10.0.0.2 tftp.lab 10.0.0.3"]


def test_sntp_responder_answers_clients_only() -> None:
    request = bytes([0x23]) + bytes(39) + b"ORIGINAL"
    answer = sntp_answer(request, 1_700_000_000.5)
    assert answer is not None and len(answer) == 48 and answer[0] & 7 == 4
    assert answer[24:32] == b"ORIGINAL"  # the client's transmit time comes back as originate
    assert struct.unpack("!I", answer[32:36])[0] == 1_700_000_000 + NTP_EPOCH_OFFSET
    assert sntp_answer(bytes([0x24]) + bytes(47), 0.0) is None  # a server's packet
    assert sntp_answer(b"short", 0.0) is None


def test_onie_server_is_resolved_to_its_first_ipv4_address(tmp_path: Path) -> None:
    answer = ("Server:\t\t10.0.0.1\nAddress:\t10.0.0.1:53\n\nName:\tonie-server\n"
              "Address: fd00::2\nName:\tonie-server\nAddress: 10.0.0.2\n")
    (tmp_path / "answer").write_text(answer)
    body = 'nslookup_address answer; echo "addr=$SERVER_ADDR"'
    assert ash(tmp_path, body).stdout.splitlines() == ["onie-discovery: onie-server is 10.0.0.2",
                                                       "addr=10.0.0.2"]
    (tmp_path / "answer").write_text("Name:\tonie-server\nAddress: $(touch x)\nAddress: 10.0.0.3;x\n")
    out = ash(tmp_path, 'SERVER_ADDR=; nslookup_address answer; echo "addr=$SERVER_ADDR"')
    assert out.stdout == "addr=\n" and not (tmp_path / "x").exists()
    (tmp_path / "run").mkdir(exist_ok=True)
    assert ash(tmp_path, 'SERVER_ADDR=x; resolve_server_name; echo "addr=$SERVER_ADDR"').stdout \
        == "addr=\n"  # no resolv.conf (a link-local address): no lookup


# BusyBox arping's output as the watch reads it (arping -D without -q).
ARPING_REPLY = ("ARPING 169.254.1.2 from 0.0.0.0 eth0\n"
                "Unicast reply from 169.254.1.2 [AA:BB:CC:00:11:22] 0.512ms\n"
                "Sent 1 probe(s) (1 broadcast(s))\nReceived 1 response(s)\n")
# Stand-ins for ip and arping: 169.254.1.2 is ours until `ip addr del`; another host answers
# probes for it, nobody for any other address. Every call is recorded in calls.
WATCH_TOOLS = r"""RUN=$PWD/run; mkdir -p run/linklocal; LOG=/dev/null
nap() { :; }; sleep() { :; }
ip() {
    echo "ip $*" >> calls
    case $* in
        "-4 addr show dev lo") [ -e gone ] || echo "    inet 169.254.1.2/16 scope link lo" ;;
        "addr del"*) : > gone ;;
    esac
}
arping() {
    echo "arping $*" >> calls
    case $* in *-D*169.254.1.2) printf '%s' "$REPLY_TEXT"; return 1 ;; esac
    return 0
}
"""


def test_a_conflict_is_defended_once_then_the_address_given_up(tmp_path: Path) -> None:
    body = WATCH_TOOLS + "linklocal_watch lo 169.254.1.2; wait; cat run/linklocal/lo"
    out = ash(tmp_path, body, env={"REPLY_TEXT": ARPING_REPLY})
    lines = out.stdout.splitlines()
    assert lines[:2] == [
        "onie-discovery: linklocal conflict 169.254.1.2 on lo with AA:BB:CC:00:11:22: "
        "defending it (one announcement)",
        "onie-discovery: linklocal conflict 169.254.1.2 on lo with AA:BB:CC:00:11:22 "
        "again within 10s: giving it up"]
    new = lines[-1]
    assert lines[2] == f"onie-discovery: linklocal {new} on lo (RFC 3927, instead of 169.254.1.2)"
    assert new.startswith("169.254.") and new != "169.254.1.2"
    calls = (tmp_path / "calls").read_text().splitlines()
    # One announcement defends; then the address goes, the new one is probed, added, announced.
    defend = "arping -q -U -c 1 -I lo -s 169.254.1.2 169.254.1.2"
    assert calls.count(defend) == 1
    assert calls.index(defend) < calls.index("ip addr del 169.254.1.2/16 dev lo")
    assert f"arping -q -D -c 3 -I lo {new}" in calls
    assert f"ip addr add {new}/16 broadcast 169.254.255.255 scope link dev lo" in calls
    assert not (tmp_path / "run" / "linklocal" / "lo.moving").exists()


def test_the_watch_ends_with_its_address_and_names_an_unknown_mac(tmp_path: Path) -> None:
    out = ash(tmp_path, WATCH_TOOLS + ": > gone; linklocal_watch lo 169.254.1.2; echo done")
    assert out.stdout == "done\n"  # not on the interface: nothing to defend
    garbage = "Unicast reply from 169.254.1.2 [$(touch x)] 1ms\n"
    out = ash(tmp_path, WATCH_TOOLS + "rm gone; linklocal_watch lo 169.254.1.2; wait",
              env={"REPLY_TEXT": garbage})
    assert "with unknown MAC: defending it" in out.stdout and not (tmp_path / "x").exists()


def test_ipv6_neighbours_join_the_sweep_on_a_link_local_lease_only(tmp_path: Path) -> None:
    body = ("LL_ADDR=169.254.3.4; LL_NEIGH6=' fe80::77%eth0'; LEASE_IF=lo; disco_ip=$LL_ADDR\n"
            "sweep_servers; echo $SWEEP_LIST; disco_ip=10.0.0.9; sweep_servers; echo $SWEEP_LIST\n"
            "for s in fe80::77%eth0 10.0.0.2; do sweep_url $s; echo $SWEEP_URL $SWEEP_SHOWN; done")
    assert ash(tmp_path, body).stdout.splitlines() == [
        "fe80::77%eth0", "",
        "http://[fe80::77%eth0]/ http://[fe80::77%25eth0]/", "http://10.0.0.2/ http://10.0.0.2/"]


def test_installer_output_goes_to_syslog_tagged_when_on(tmp_path: Path) -> None:
    body = ('RUN=$PWD/run; logger() { echo "logger $*"; cat; } > syslog.out\n'
            "for on in '' 10.0.0.6; do SYSLOG_ON=$on; rm -f syslog.out\n"
            " installer_syslog_start; printf 'one\\ntwo\\n' | tee -a inst.log $INSTALLER_SYSLOG\n"
            " installer_syslog_end; cat syslog.out 2> /dev/null || echo none; done")
    out = ash(tmp_path, body).stdout.splitlines()
    assert out == ["one", "two", "none", "one", "two", "logger -t os-install", "one", "two"]
    assert (tmp_path / "inst.log").read_text() == "one\ntwo\n" * 2
    assert not (tmp_path / "run" / "installer.fifo").exists()


@pytest.mark.parametrize(("hwclock", "line"), [
    ("return 0", "onie-discovery: clock saved to the hardware clock (hwclock -w -u)"),
    ("echo 'hwclock: cannot open /dev/rtc: No such file' >&2; return 1",
     "onie-discovery: fail hwclock cannot open /dev/rtc: No such file"),
])
def test_the_clock_is_saved_to_the_rtc_after_ntp(tmp_path: Path, hwclock: str, line: str) -> None:
    body = (f'RUN=$PWD/run; hwclock() {{ echo "hwclock $*" > called; {hwclock}; }}\n'
            "RDATE=true; disco_ntpsrv=10.0.0.5; CONNECT_TIMEOUT=1; clock_sync")
    out = ash(tmp_path, body).stdout.splitlines()
    assert out[-1] == line and out[0].startswith("onie-discovery: clock set by ntp 10.0.0.5")
    assert (tmp_path / "called").read_text() == "hwclock -w -u\n"
