"""/init's module loading by need (templates/guest/init.j2), its functions run under the host's
BusyBox ash: which modules wait for hardware, and what marks a group done.

The boot tests prove the whole order in QEMU (tests/test_discovery_boot.py: a virtio NIC with
no disk, a USB stick); here the matching of modules.alias patterns against device aliases is
checked with chosen values, which no QEMU machine offers all at once.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from builder.initramfs.kmod import LoadPlan, LoadStep
from builder.render import make_environment, render_template
from tests.conftest import require_tool
from tests.test_discovery import kvm, values

XHCI = "pci:v*d*sv*sd*bc0Csc03i30*"
E1000 = "pci:v00008086d0000100Esv*sd*bc*sc*i* pci:v00008086d00001000sv*sd*bc*sc*i*"
VIRTIO_NIC = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
IDE = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"
QEMU_XHCI = "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"


def init_functions(tmp_path: Path, plan: LoadPlan) -> Path:
    """The function definitions of the rendered /init (its top level mounts and loads)."""
    recipe = kvm()
    text = render_template(make_environment(recipe.templates), "guest/init.j2",
                           {**values(recipe), "module_load": plan})
    wanted = ("unbound_aliases", "hardware_for", "storage_hardware", "load_pass")
    bodies = [m.group(0) for m in re.finditer(r"(?ms)^(\w+)\(\) \{\n.*?^\}\n", text)
              if m.group(1) in wanted]
    assert len(bodies) == len(wanted)
    header = "\n".join(line for line in text.splitlines()
                       if line.startswith(("STORAGE_MODULES=", "STORAGE_ALIASES=")))
    lib = tmp_path / "init-lib.sh"
    lib.write_text(f"NL='\n'\n{header}\n" + "\n".join(bodies))
    return lib


def run(lib: Path, body: str) -> list[str]:
    require_tool("busybox", "to run the generated shell (busybox-static)")
    out = subprocess.run(["busybox", "ash", "-c", f". {lib}\n{body}"], capture_output=True,
                         text=True, timeout=30, cwd=lib.parent, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_hardware_for_matches_alias_patterns_line_by_line(tmp_path: Path) -> None:
    lib = init_functions(tmp_path, LoadPlan(storage=(LoadStep("xhci_pci", (XHCI,)),)))
    said = run(lib, f"""
UNBOUND="${{NL}}{VIRTIO_NIC}${{NL}}{IDE}${{NL}}"
hardware_for '{E1000}' && echo e1000 || echo no-e1000
hardware_for 'pci:v00001AF4d*sv*sd*bc*sc*i*' && echo virtio_pci || echo no-virtio_pci
hardware_for '{XHCI}' && echo xhci || echo no-xhci
hardware_for '' && echo empty || echo no-empty
UNBOUND="${{UNBOUND}}{QEMU_XHCI}${{NL}}"
hardware_for '{XHCI}' && echo xhci || echo no-xhci
touch 'pci:v*d*sv*sd*bc0Csc03i30*x'  # a file a pattern would match must not matter
hardware_for '{XHCI}' && echo xhci-again || echo no-xhci-again
""")
    assert said == ["no-e1000", "virtio_pci", "no-xhci", "no-empty", "xhci", "xhci-again"]


def test_storage_hardware_needs_storage_modules_and_assumes_one_without_aliases(
        tmp_path: Path) -> None:
    body = ('unbound_aliases() { UNBOUND="${NL}${DEVICE}${NL}"; }\n'
            "storage_hardware && echo wanted || echo not")
    none = init_functions(tmp_path, LoadPlan())
    assert run(none, f"DEVICE={QEMU_XHCI}\n{body}") == ["not"]
    usb = init_functions(tmp_path, LoadPlan(storage=(LoadStep("xhci_pci", (XHCI,)),
                                                     LoadStep("usb_storage"))))
    assert run(usb, f"DEVICE={QEMU_XHCI}\n{body}") == ["wanted"]
    assert run(usb, f"DEVICE={VIRTIO_NIC}\n{body}") == ["not"]
    # usb_storage alone (xHCI built into the kernel): no alias says which device it waits for.
    blind = init_functions(tmp_path, LoadPlan(storage=(LoadStep("usb_storage"),)))
    assert run(blind, f"DEVICE={VIRTIO_NIC}\n{body}") == ["wanted"]


def test_load_pass_loads_modules_whose_devices_are_there_in_order(tmp_path: Path) -> None:
    lib = init_functions(tmp_path, LoadPlan())
    said = run(lib, f"""
modprobe() {{ echo "modprobe $1"; }}
UNBOUND="${{NL}}{VIRTIO_NIC}${{NL}}" LOADED=" " PROGRESS=
load_pass e1000 '{E1000}' virtio_pci 'pci:v00001AF4d*sv*sd*bc*sc*i*' virtio_net 'virtio:d00000001v*' \\
    af_packet ''
echo "progress=$PROGRESS loaded=$LOADED"
UNBOUND="${{NL}}virtio:d00000001v00001AF4${{NL}}" PROGRESS=
load_pass e1000 '{E1000}' virtio_pci 'pci:v00001AF4d*sv*sd*bc*sc*i*' virtio_net 'virtio:d00000001v*' \\
    af_packet ''
echo "progress=$PROGRESS loaded=$LOADED"
""")
    # A module without aliases always loads; virtio_net waits for the device virtio_pci brings.
    assert said == ["modprobe virtio_pci", "modprobe af_packet",
                    "progress=1 loaded= virtio_pci af_packet ",
                    "modprobe virtio_net", "progress=1 loaded= virtio_pci af_packet virtio_net "]
