"""The discovery plan, and the generated script's functions run under the host's BusyBox ash.

No QEMU here: the plan is checked against ONIE's facts (platform x86_64-kvm_x86_64-r0, ASIC
qemu, MAC 52:54:00:12:34:56, address 192.168.1.178), the scripts with ``sh -n``, and their
functions (URL checks, option decoding, waterfall, backoff, the udhcpc event script) run under
``busybox ash`` from Debian's busybox-static, the same build as the image's, with hostile
values that must never run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from builder.errors import RecipeError
from builder.initramfs.assemble import Context
from builder.initramfs.discovery import DHCP_FIELDS, encode_vivso, make_plan
from builder.recipe.load import load_recipe
from builder.recipe.model import AfterInstall, Method, Recipe
from builder.render import make_environment, render_template
from tests.conftest import require_tool
from tests.test_waterfall import ONIE_NAMES, ONIE_WATERFALL

RECIPES = Path(__file__).resolve().parent / "recipes"
KERNEL = "6.1.0-test-amd64"
HOSTILE = ["$(touch {p})", "`touch {p}`", "x;touch {p}", "a\ntouch {p}", "http://x/$(touch {p})",
           "http://x/`touch {p}`", "http://x/a b", "http://x/\";touch {p};\"", "http://x/'$(touch {p})'"]


def kvm() -> Recipe:
    return load_recipe(RECIPES / "kvm_x86_64.yaml")[0]


def values(recipe: Recipe, tmp: Path | None = None, library: bool = False) -> dict[str, Any]:
    """The values the build gives templates (Context's), with host paths for running them."""
    resolution: Any = SimpleNamespace(kernel=SimpleNamespace(release=KERNEL))
    out = Context(recipe, resolution, 0).template_values()
    out["library"] = library
    if tmp is not None:
        out["paths"] = {**out["paths"], "run": str(tmp / "run"), "log": str(tmp / "log"),
                        "installer_log": str(tmp / "installer.log"),
                        "resolv": str(tmp / "resolv.conf"), "cmdline": str(tmp / "cmdline")}
    return out


def render(name: str, recipe: Recipe, tmp: Path | None = None, library: bool = False) -> str:
    return render_template(make_environment(recipe.templates), name, values(recipe, tmp, library))


# --- the plan ---------------------------------------------------------------------------------


def test_plan_follows_onie() -> None:
    plan = make_plan(kvm(), KERNEL, "0.1.0")
    assert plan.platform == "x86_64-kvm_x86_64-r0"
    onie = (Method.INSTALL_URL, Method.LOCAL, Method.DHCP_URL, Method.HTTP, Method.TFTP,
            Method.WATERFALL)
    assert tuple(m for m in plan.methods if m in onie) == onie  # other methods may sit between
    assert plan.install_names == ONIE_NAMES
    assert plan.update_names[0] == "onie-updater-x86_64-kvm_x86_64-r0"
    assert plan.vendor_class == "onie_vendor:x86_64-kvm_x86_64-r0"
    assert bytes.fromhex(plan.user_class_hex) == b"onie_dhcp_user_class"
    # ONIE's request list plus 150 (others may add theirs, e.g. 17 for iSCSI).
    assert {7, 43, 54, 66, 67, 72, 114, 125, 150} <= set(plan.request_options)
    # VIVSO as ONIE's client sends it: enterprise 42623, sub-options machine, arch, revision.
    assert bytes.fromhex(plan.vivso_hex) == (
        (42623).to_bytes(4, "big") + bytes([23]) + b"\x03\x0akvm_x86_64" + b"\x04\x06x86_64"
        + b"\x05\x010")
    h = plan.headers
    assert (h.vendor_id, h.machine, h.machine_rev, h.arch, h.version) == (
        "42623", "kvm_x86_64", "0", "x86_64", "2026.11")
    assert h.user_agent == f"onie/1.0 (Linux-{KERNEL}; onie-builder-0.1.0; 2026.11)"
    assert plan.after_install is AfterInstall.REBOOT and not plan.insecure
    assert plan.uses_network
    # IPv6 (neighbour discovery, DHCPv6) waits seconds on an IPv4-only network: it comes last.
    assert plan.methods[-1] is Method.IPV6


def test_plan_takes_the_recipes_order_timeouts_and_backoff(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(f"""extends: {RECIPES / 'kvm_x86_64.yaml'}
discovery:
  methods: [local, install_url]
  after_install: poweroff
  insecure: true
  interfaces: [eth1]
  backoff: {{first: 0.5, limit: 8, jitter: 0.1}}
  timeouts: {{connect: 5, tftp: 1, local: 0.25, stall: 4}}
  downloads: {{dir: /mnt/dl, resume: 1, progress: 9}}
""")
    plan = make_plan(load_recipe(tmp_path / "r.yaml")[0], KERNEL, "0.1.0")
    assert plan.methods == (Method.LOCAL, Method.INSTALL_URL)
    assert not plan.uses_network
    assert (plan.backoff_first_ms, plan.backoff_limit_ms, plan.backoff_jitter_pct) == (500, 8000, 10)
    assert (plan.connect_timeout, plan.tftp_timeout, plan.local_wait_ms) == (5, 1, 250)
    assert (plan.stall_timeout, plan.download_dir, plan.resume_count,
            plan.progress_interval) == (4, "/mnt/dl", 1, 9)
    assert plan.interfaces == ("eth1",) and plan.insecure
    assert plan.after_install is AfterInstall.POWEROFF
    script = render("guest/discovery.sh.j2", load_recipe(tmp_path / "r.yaml")[0])
    assert "\nMETHODS='local install_url'\n" in script
    assert "\nAFTER_INSTALL=poweroff\n" in script
    assert ("\nSTALL_TIMEOUT=4\nRESUME_COUNT=1\nPROGRESS_INTERVAL=9\n"
            "DOWNLOAD_DIR=/mnt/dl  # empty: RUN\n") in script


@pytest.mark.parametrize(("block", "message"), [
    ("methods: [local, local]", "discovery.methods: expected each method once, got 'local' twice"),
    ("methods: [usb]", "discovery.methods[0]: expected one of "
     + ", ".join(repr(m.value) for m in list(Method)[:-1]) + f" or {list(Method)[-1].value!r}, got 'usb'"),
    ("after_install: halt", "discovery.after_install: expected one of 'reboot' or 'poweroff',"
                            " got 'halt'"),
    ("backoff: {first: 10, limit: 5}", "discovery.backoff: limit: expected at least first (10),"
                                        " got 5"),
    ("timeouts: {connect: 0}", "discovery.timeouts.connect: expected a number >= 1, got 0"),
    ("interfaces: ['eth0;reboot']", "discovery.interfaces[0]: string should match pattern"
                                    " '^[A-Za-z0-9_.-]{1,15}$', got 'eth0;reboot'"),
    ("timeouts: {stall: 0}", "discovery.timeouts.stall: expected a number >= 1, got 0"),
    ("downloads: {resume: -1}", "discovery.downloads.resume: expected a number >= 0, got -1"),
    ("downloads: {dir: 'dl;x'}", "discovery.downloads.dir: string should match pattern"
                                 " '^/[A-Za-z0-9._/-]{0,200}$', got 'dl;x'"),
    ("insecur: true", "discovery.insecur: unknown key; did you mean 'insecure'?"),
])
def test_bad_discovery_sections(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {RECIPES / 'kvm_x86_64.yaml'}\ndiscovery:\n  {block}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [message]
    assert info.value.problems[0].startswith(f"{path}:3: ")


def test_vivso_encoding_refuses_what_does_not_fit() -> None:
    assert encode_vivso(42623, [(1, "ab")]) == "0000a67f040102" + b"ab".hex()
    with pytest.raises(ValueError, match="does not fit"):
        encode_vivso(42623, [(1, "x" * 254)])


# --- the generated scripts --------------------------------------------------------------------


def test_scripts_parse_and_quote_the_plan(tmp_path: Path) -> None:
    require_tool("busybox", "to check the generated shell (busybox-static)")
    for name in ("guest/discovery.sh.j2", "guest/lib/udhcpc.sh.j2"):
        path = tmp_path / Path(name).name
        path.write_text(render(name, kvm()))
        for shell in (["busybox", "sh"], ["sh"]):
            subprocess.run([*shell, "-n", str(path)], check=True)
    script = (tmp_path / "discovery.sh.j2").read_text()
    assert f"\nINSTALL_NAMES={shlex.quote(' '.join(ONIE_NAMES))}\n" in script
    assert "\nVENDOR_CLASS=onie_vendor:x86_64-kvm_x86_64-r0\n" in script
    assert "eval " not in script and "\n. \"$MACHINE_CONF\"" not in script


def ash(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``body`` under busybox ash after loading the script's functions (no main)."""
    require_tool("busybox", "to run the generated shell (busybox-static)")
    lib = tmp_path / "discovery-lib.sh"
    if not lib.exists():
        lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
        (tmp_path / "run").mkdir(exist_ok=True)
    return subprocess.run(["busybox", "ash", "-c", f". {shlex.quote(str(lib))}\n{body}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def test_script_waterfall_matches_onies(tmp_path: Path) -> None:
    out = ash(tmp_path, 'NAMES=$INSTALL_NAMES; waterfall_paths 52:54:00:12:34:56 192.168.1.178')
    assert tuple(out.stdout.split()) == ONIE_WATERFALL
    out = ash(tmp_path, 'NAMES=$INSTALL_NAMES; waterfall_paths "$M" "1.2.3"', {"M": "$(touch p)"})
    assert tuple(out.stdout.split()) == ONIE_NAMES and not (tmp_path / "p").exists()


@pytest.mark.parametrize(("url", "ok"), [
    ("http://10.200.1.1/onie-installer", True),
    ("https://onie-server:8443/x/onie-installer.bin?mac=52-54&n=1", True),
    ("tftp://10.0.0.1/a/b", True),
    ("file:///dev/sda1/onie-installer", True),
    ("http://[fe80::1]/x", True),
    ("gopher://x/y", False),
    ("http://", False),
    ("/onie-installer", False),
    ("http://x/" + "a" * 1100, False),
])
def test_valid_url(tmp_path: Path, url: str, ok: bool) -> None:
    assert (ash(tmp_path, 'valid_url "$U"', {"U": url}).returncode == 0) is ok


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_values_are_refused_and_never_run(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    value = template.format(p=marker)
    body = ('valid_url "$V" && echo url; is_host "$V" && echo host; valid_path "$V" && echo path;'
            ' printf "[%s]" "$(shown "$V")"; hex_text "$V"; hex_ipv4s "$V"; vivso_url "$V" 1;'
            ' echo end')
    out = ash(tmp_path, body, {"V": value})
    assert out.stdout.endswith("end\n"), out.stderr
    assert "url" not in out.stdout.split("]")[0] and "host\n" not in out.stdout
    shown = out.stdout.split("[", 1)[1].split("]", 1)[0]
    assert set(shown) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~:/?#@!&+,=%-")
    assert not marker.exists()


def vivso(*parts: tuple[int, list[tuple[int, bytes]]]) -> str:
    out = b""
    for enterprise, subs in parts:
        payload = b"".join(bytes([code, len(v)]) + v for code, v in subs)
        out += enterprise.to_bytes(4, "big") + bytes([len(payload)]) + payload
    return out.hex()


@pytest.mark.parametrize(("data", "code", "expected"), [
    (vivso((42623, [(1, b"http://a/i"), (2, b"http://a/u")])), 1, "http://a/i"),
    (vivso((42623, [(1, b"http://a/i"), (2, b"http://a/u")])), 2, "http://a/u"),
    (vivso((9, [(1, b"http://other/")]), (42623, [(1, b"http://a/i")])), 1, "http://a/i"),
    (vivso((9, [(1, b"http://other/")])), 1, None),
    ("0000a67f0a0105", 1, None),  # a length running past the end
    ("0000a67f", 1, None),
    ("zz", 1, None),
    (vivso((42623, [(1, b"x" * 250)])) * 8, 1, "x" * 250),  # 4 KB of option data
])
def test_vivso_url(tmp_path: Path, data: str, code: int, expected: str | None) -> None:
    out = ash(tmp_path, f'vivso_url "$D" {code}', {"D": data})
    assert (out.returncode == 0) is (expected is not None)
    assert out.stdout == (expected or "")


def test_option_decoders(tmp_path: Path) -> None:
    out = ash(tmp_path, 'hex_ipv4s 0ac8fa010ac8fa02; hex_ipv4s 0ac8fa || echo short;'
                        ' hex_text 687474703a2f2f612f62; echo; hex_text "$(printf %04096d 0)" | wc -c')
    assert out.stdout.split("\n") == ["10.200.250.1", "10.200.250.2", "short", "http://a/b", "2048", ""]


def test_backoff_doubles_to_the_limit_with_bounded_jitter(tmp_path: Path) -> None:
    # kvm_x86_64 keeps the defaults: 2 s doubling to 60 s, up to 25 % jitter.
    out = ash(tmp_path, 'for r in 1 2 3 4 5 6 7 8; do backoff_ms $r; done')
    got = [int(v) for v in out.stdout.split()]
    for value, base in zip(got, [2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000], strict=True):
        assert base <= value <= base * 1.25


def test_cmdline_modes_and_identity(tmp_path: Path) -> None:
    (tmp_path / "cmdline").write_text(
        "quiet boot_reason=update install_url=http://x/y serial_num=SN;1$(x) eth_addr=52:54:00:12:34:56\n")
    out = ash(tmp_path, 'read_cmdline; find_identity; echo "$MODE|$OPERATION|$INSTALL_URL|$SERIAL|'
                        '$ETH_ADDR"; set -- $NAMES; echo $1')
    assert out.stdout.split("\n")[:2] == [
        "update|onie-update|http://x/y|SN1x|52:54:00:12:34:56", "onie-updater-x86_64-kvm_x86_64-r0"]
    (tmp_path / "cmdline").write_text("boot_reason=$(reboot)\n")
    out = ash(tmp_path, 'read_cmdline; echo "$MODE"')
    assert out.stdout.splitlines() == [
        "onie-discovery: reject boot_reason ??reboot? (expected install, update, embed, rescue"
        " or uninstall)", "install"]


def test_udhcpc_script_keeps_hostile_values_as_data(tmp_path: Path) -> None:
    """The event script writes every value verbatim to a file and configures only checked ones.

    It runs in a network namespace of its own (``unshare -n``) on a veth interface: BusyBox
    ash prefers its own ``ip`` applet, so the script's ``ip`` commands must find nothing of
    the host's to act on.
    """
    require_tool("busybox", "to run the generated shell (busybox-static)")
    require_tool("unshare", "to give the event script a network namespace of its own")
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    script = tmp_path / "udhcpc.script"
    script.write_text(render("guest/lib/udhcpc.sh.j2", kvm(), tmp_path))
    marker = tmp_path / "pwned"
    hostile = {
        "bootfile": f"`touch {marker}`;reboot\nsecond line",
        "sname": f"$(touch {marker})",
        "opt114": "41" * 2048,  # 4 KB
        "hostname": "x" * 4096,
        "router": f"10.0.0.1 $(touch {marker}) 10.0.0.300",
        "dns": f"10.0.0.53 ;touch {marker}",
    }
    env = {"PATH": os.environ["PATH"], "interface": "obtest0", "ip": "10.0.0.7", "mask": "24",
           **hostile}
    show = "ip -4 addr show dev obtest0 | grep inet; ip route"

    def run(event: str) -> subprocess.CompletedProcess[str]:
        body = (f"ip link add obtest0 type veth peer name obtest1 && ip link set obtest0 up && "
                f"{{ busybox ash {shlex.quote(str(script))} {event}; echo status=$?; {show}; }}")
        return subprocess.run(["unshare", "-n", "busybox", "sh", "-c", body], env=env,
                              capture_output=True, text=True, timeout=30)

    out = run("bound").stdout.splitlines()
    assert out[0] == "status=0"
    assert out[1].split()[:2] == ["inet", "10.0.0.7/24"]
    assert out[2].startswith("default via 10.0.0.1 dev obtest0")
    lease = tmp_path / "run" / "dhcp" / "obtest0"
    for name, value in hostile.items():
        assert (lease / name).read_bytes() == value.encode()
    assert (lease / "bound").exists() and sorted(p.name for p in lease.iterdir()) == sorted(
        [*DHCP_FIELDS, "bound"])
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 10.0.0.53\n"
    assert not marker.exists()
    # A bad address configures nothing; an interface name that is not a name is refused.
    env.update(ip="10.0.0.256")
    assert run("bound").stdout.splitlines() == ["status=1"]
    env.update(ip="10.0.0.7", interface="../x")
    assert run("bound").stdout.splitlines() == ["status=1"]
    assert not marker.exists()


LIVE = "vfat 24576 0 - Live 0x0000000000000000\nfat 86016 1 vfat, Live 0x0000000000000000\n"


def test_modules_loading_reads_the_state_column(tmp_path: Path) -> None:
    (tmp_path / "live").write_text(LIVE)
    (tmp_path / "loading").write_text(LIVE + "nls_cp437 16384 0 - Loading 0x0000000000000000\n")
    out = ash(tmp_path, 'for f in live loading; do PROC_MODULES=$f; modules_loading && echo "$f yes"'
                        ' || echo "$f no"; done')
    assert out.stdout.split("\n") == ["live no", "loading yes", ""]


# A mount that fails while the flag file exists, as the kernel's does while vfat is half loaded.
FAKE_MOUNT = 'mount() { echo "mount $*" >> calls; ! [ -e busy ]; }\n'


def test_local_mount_waits_for_the_stick_preload(tmp_path: Path) -> None:
    """A mount during local_ready's preload of vfat would fail and fall back to loading ext4:
    the preload ends first, and the plain mount then finds vfat."""
    (tmp_path / "busy").touch()
    out = ash(tmp_path, FAKE_MOUNT + '(sleep 0.3; rm busy) & STICK_FS_PID=$!\n'
                        'local_mount /dev/sda && echo mounted; echo "pid=$STICK_FS_PID"')
    assert out.stdout.split("\n") == ["mounted", "pid=", ""], out.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [f"mount -o ro /dev/sda {tmp_path}/run/mnt"]


def test_local_mount_retries_after_a_module_load(tmp_path: Path) -> None:
    """In a later round /init's filesystem group may be loading: the -t mount is tried again
    once no module is loading; with none loading a failed mount fails at once."""
    (tmp_path / "busy").touch()
    (tmp_path / "modules").write_text(LIVE.replace("Live", "Loading", 1))
    out = ash(tmp_path, FAKE_MOUNT + 'PROC_MODULES=modules FS_TYPES=vfat,ext4\n'
                        f'(sleep 0.3; printf "{LIVE}" > modules; rm busy) &\n'
                        'local_mount /dev/sdb && echo mounted')
    assert out.stdout == "mounted\n", out.stderr
    mounts = (tmp_path / "calls").read_text().splitlines()
    assert [m.split(" /dev")[0] for m in mounts] == ["mount -o ro", "mount -t vfat,ext4 -o ro",
                                                     "mount -t vfat,ext4 -o ro"]
    (tmp_path / "busy").touch()
    (tmp_path / "calls").unlink()
    out = ash(tmp_path, FAKE_MOUNT + 'PROC_MODULES=modules FS_TYPES=vfat,ext4\n'
                        'local_mount /dev/sdb || echo refused')
    assert out.stdout == "refused\n"
    assert len((tmp_path / "calls").read_text().splitlines()) == 2
