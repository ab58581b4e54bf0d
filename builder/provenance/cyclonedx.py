"""The CycloneDX 1.6 JSON BOM of an image, built with cyclonedx-python-lib.

Containment is nesting: the image is the BOM's subject (``metadata.component``); the
initramfs holds the components it has files of, each holding its files, and the files of no
component; output files (vmlinuz, boot images) and packages resolved as dependencies without
a file in the image sit at the top. A Debian package's source package, and each Built-Using
one, are its ``pedigree.ancestors``. Every bom-ref is set, since the library would otherwise
make random ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.license import LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from builder.provenance import inventory as inv
from builder.provenance.licenses import NOASSERTION

PREFIX = "onie-builder:"  # names our properties (CycloneDX property taxonomy: a tool prefix)


def render_cyclonedx(inventory: inv.Inventory) -> str:
    """The CycloneDX JSON text.

    Not schema-checked here: the library's JSON-schema validation imports jsonschema's format
    checkers, ~2 s per build; the typed model serializes to the schema, and the tests check
    every shipped platform's BOM with the library's strict validator."""
    return JsonV1Dot6(make_bom(inventory)).output_as_string(indent=2) + "\n"


def make_bom(inventory: inv.Inventory) -> Bom:
    """The BOM model: the image, its outputs, the initramfs tree and the dependency graph."""
    image = Component(name=inventory.platform, version=inventory.version, bom_ref="image",
                      type=ComponentType.OPERATING_SYSTEM)
    tool = Component(name="onie-builder", version=inventory.builder_version,
                     type=ComponentType.APPLICATION, bom_ref="tool:onie-builder")
    bom = Bom(serial_number=inventory.serial, metadata=BomMetaData(
        component=image, tools=ToolRepository(components=[tool]),
        timestamp=datetime.fromtimestamp(inventory.source_date_epoch, UTC),
        properties=[Property(name=PREFIX + "recipe", value=inventory.recipe),
                    Property(name=PREFIX + "kernel-release", value=inventory.kernel_release),
                    Property(name=PREFIX + "source-date-epoch",
                             value=str(inventory.source_date_epoch))]))
    initrd = inventory.initramfs
    initramfs = Component(name="initramfs", type=ComponentType.FILE, bom_ref="initramfs",
                          hashes=[HashType(alg=HashAlgorithm.SHA_256, content=initrd.sha256)],
                          properties=[Property(name=PREFIX + "file", value=initrd.name)])
    outputs = [_output(o) for o in inventory.outputs if o.name != initrd.name]
    owned = {f.component for f in inventory.files}
    packages = {c.key: _component(c) for c in inventory.components}
    for file in inventory.files:
        parent = packages.get(file.component or "", initramfs)
        parent.components.add(_file(file))
    inside = [packages[c.key] for c in inventory.components if c.key in owned]
    outside = [packages[c.key] for c in inventory.components if c.key not in owned]
    initramfs.components.update(inside)
    bom.components.update([initramfs, *outputs, *outside])
    bom.register_dependency(image, [initramfs, *outputs, *outside])
    bom.register_dependency(initramfs, inside)
    return bom


def _output(output: inv.Output) -> Component:
    return Component(name=output.name, type=ComponentType.FILE, bom_ref=f"output:{output.name}",
                     hashes=[HashType(alg=HashAlgorithm.SHA_256, content=output.sha256)])


def _component(component: inv.Component) -> Component:
    properties = [Property(name=PREFIX + "origin", value=component.origin)]
    if component.license.expression == NOASSERTION:
        properties.append(Property(name=PREFIX + "license-comment",
                                   value=component.license.comment))
    return Component(
        name=component.name, version=component.version or None, bom_ref=component.key,
        type=ComponentType.LIBRARY if component.kind in ("debian", "deb") else ComponentType.FILE,
        supplier=OrganizationalEntity(name="Debian") if component.kind == "debian" else None,
        purl=PackageURL.from_string(component.purl),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=component.sha256)],
        licenses=([] if component.license.expression == NOASSERTION
                  else [LicenseExpression(component.license.expression)]),
        pedigree=_pedigree(component), properties=properties)


def _pedigree(component: inv.Component) -> Pedigree | None:
    if component.sources is None:
        return None
    ancestors = []
    for ref in component.sources.refs:
        relation = "source" if ref == component.sources.source else "built-using"
        purl = PackageURL("deb", "debian", ref.name, ref.version, {"arch": "source"})
        ancestors.append(Component(
            name=ref.name, version=ref.version, purl=purl, type=ComponentType.LIBRARY,
            bom_ref=f"{component.key}/{relation}:{ref.name}@{ref.version}",
            properties=[Property(name=PREFIX + "relation", value=relation)]))
    return Pedigree(ancestors=ancestors)


def _file(file: inv.File) -> Component:
    hashes = [] if file.sha256 is None or file.sha1 is None else [
        HashType(alg=HashAlgorithm.SHA_256, content=file.sha256),
        HashType(alg=HashAlgorithm.SHA_1, content=file.sha1)]
    properties = [Property(name=PREFIX + "origin", value=file.origin)]
    if file.sha256 is None:
        properties.append(Property(name=PREFIX + "secret", value="true"))
    return Component(name=file.path, type=ComponentType.FILE, bom_ref=f"file:{file.path}",
                     hashes=hashes, properties=properties)
