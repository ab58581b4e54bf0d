"""The SPDX 2.3 JSON document of an image, built and checked with spdx-tools.

Relationships: the document DESCRIBES the image; the image CONTAINS the initramfs and its
output files (vmlinuz, boot images: single-file packages); the initramfs CONTAINS the
components it has files of and the files of no component (templates, overlays); a component
CONTAINS its files and is GENERATED_FROM its Debian source package (and from each
Built-Using one). A package resolved as a dependency but with no file in the image is a
DEPENDS_ON of the image.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime

from license_expression import LicenseExpression
from packageurl import PackageURL
from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.extracted_licensing_info import ExtractedLicensingInfo
from spdx_tools.spdx.model.file import File
from spdx_tools.spdx.model.package import (
    ExternalPackageRef,
    ExternalPackageRefCategory,
    Package,
    PackagePurpose,
)
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from builder.components.sources import SourceRef
from builder.errors import BuildError
from builder.provenance import inventory as inv
from builder.provenance.licenses import NOASSERTION, PackageLicense, parse_expression

SPDX_VERSION = "SPDX-2.3"
DOCUMENT = "SPDXRef-DOCUMENT"
IMAGE = "SPDXRef-Image"
INITRAMFS = "SPDXRef-Initramfs"


def render_spdx(inventory: inv.Inventory) -> str:
    """The SPDX JSON text; raises BuildError when spdx-tools finds the document invalid."""
    document = make_document(inventory)
    problems = validate_full_spdx_document(document)
    if problems:
        raise BuildError("the SPDX document is not valid:\n" + "\n".join(
            f"  {p.validation_message}" for p in problems[:20]))
    out = io.StringIO()
    write_document_to_stream(document, out, validate=False)
    return out.getvalue() + "\n"


def make_document(inventory: inv.Inventory) -> Document:
    """The document model: packages, files, relationships and the licences SPDX lacks."""
    created = datetime.fromtimestamp(inventory.source_date_epoch, UTC)
    info = CreationInfo(
        SPDX_VERSION, DOCUMENT, inventory.platform,
        f"https://spdx.org/spdxdocs/{inventory.platform}-{inventory.serial}",
        [Actor(ActorType.TOOL, f"onie-builder-{inventory.builder_version}")], created,
        document_comment=f"ONIE environment {inventory.platform} built from recipe "
                         f"{inventory.recipe}; secret files are listed in manifest.json only.")
    document = Document(info)
    document.relationships.append(Relationship(DOCUMENT, RelationshipType.DESCRIBES, IMAGE))
    document.packages += [_image(inventory, created), _initramfs(inventory)]
    _add_outputs(document, inventory)
    has_files = {f.component for f in inventory.files}
    for component in inventory.components:
        _add_component(document, component, component.key in has_files)
    _add_files(document, inventory)
    _add_sources(document, inventory)
    refs = {ref.id: ref for c in inventory.components for ref in c.license.refs}
    document.extracted_licensing_info = [
        ExtractedLicensingInfo(ref.id, ref.text, ref.name) for ref in refs.values()]
    return document


def _image(inventory: inv.Inventory, created: datetime) -> Package:
    return Package(IMAGE, inventory.platform, SpdxNoAssertion(), version=inventory.version,
                   supplier=SpdxNoAssertion(), files_analyzed=True,
                   primary_package_purpose=PackagePurpose.OPERATING_SYSTEM, built_date=created,
                   license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
                   copyright_text=SpdxNoAssertion(),
                   comment=f"recipe {inventory.recipe}, kernel {inventory.kernel_release}")


def _initramfs(inventory: inv.Inventory) -> Package:
    initrd = inventory.initramfs
    return Package(INITRAMFS, "initramfs", SpdxNoAssertion(), file_name=initrd.name,
                   files_analyzed=True, primary_package_purpose=PackagePurpose.ARCHIVE,
                   checksums=[Checksum(ChecksumAlgorithm.SHA256, initrd.sha256)],
                   license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
                   copyright_text=SpdxNoAssertion())


def _add_outputs(document: Document, inventory: inv.Inventory) -> None:
    """Each output file as a single-file package (SPDX files need a SHA-1, which would mean
    reading the boot images once more for every build)."""
    kernel = [c for c in inventory.components if c.in_kernel]
    for output in inventory.outputs:
        if output.name == inventory.initramfs.name:
            continue
        spdx_id = ref_id("Output", output.name)
        document.packages.append(Package(
            spdx_id, output.name, SpdxNoAssertion(), file_name=f"./{output.name}",
            files_analyzed=False, primary_package_purpose=PackagePurpose.FILE,
            checksums=[Checksum(ChecksumAlgorithm.SHA256, output.sha256)],
            license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion()))
        document.relationships.append(Relationship(IMAGE, RelationshipType.CONTAINS, spdx_id))
        if output.name == "vmlinuz":
            document.relationships += [
                Relationship(package_id(c), RelationshipType.CONTAINS, spdx_id) for c in kernel]
    document.relationships.append(Relationship(IMAGE, RelationshipType.CONTAINS, INITRAMFS))


def _add_component(document: Document, component: inv.Component, has_files: bool) -> None:
    spdx_id = package_id(component)
    document.packages.append(Package(
        spdx_id, component.name, SpdxNoAssertion(), version=component.version or None,
        supplier=(Actor(ActorType.ORGANIZATION, "Debian") if component.kind == "debian"
                  else SpdxNoAssertion()),
        files_analyzed=has_files,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, component.sha256)],
        source_info=_source_info(component), license_concluded=SpdxNoAssertion(),
        license_declared=license_of(component.license), license_comment=component.license.comment,
        copyright_text=SpdxNoAssertion(),
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER,
                                                "purl", component.purl)]))
    if has_files:
        document.relationships.append(Relationship(INITRAMFS, RelationshipType.CONTAINS, spdx_id))
    elif not component.in_kernel:
        document.relationships.append(Relationship(
            IMAGE, RelationshipType.DEPENDS_ON, spdx_id,
            comment="resolved as a dependency; none of its files is in the image"))


def _add_files(document: Document, inventory: inv.Inventory) -> None:
    owners = {c.key: package_id(c) for c in inventory.components}
    for file in inventory.files:
        if file.sha256 is None or file.sha1 is None:
            continue  # a secret: SPDX 2.3 needs a SHA-1 of every file, and none is published
        spdx_id = ref_id("File", file.path)
        document.files.append(File(f".{file.path}", spdx_id, [
            Checksum(ChecksumAlgorithm.SHA1, file.sha1),
            Checksum(ChecksumAlgorithm.SHA256, file.sha256)], comment=f"origin {file.origin}"))
        owner = owners.get(file.component or "", INITRAMFS)
        document.relationships.append(Relationship(owner, RelationshipType.CONTAINS, spdx_id))


def _add_sources(document: Document, inventory: inv.Inventory) -> None:
    for source in inventory.sources:
        document.packages.append(Package(
            source_id(source), source.name, SpdxNoAssertion(), version=source.version,
            supplier=Actor(ActorType.ORGANIZATION, "Debian"), files_analyzed=False,
            primary_package_purpose=PackagePurpose.SOURCE, license_concluded=SpdxNoAssertion(),
            license_declared=SpdxNoAssertion(), copyright_text=SpdxNoAssertion(),
            comment="Debian source package: `onie-builder sources` downloads it",
            external_references=[ExternalPackageRef(
                ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", source_purl(source))]))
    for component in inventory.components:
        if component.sources is None:
            continue
        for source in component.sources.refs:
            comment = None if source == component.sources.source else "Built-Using"
            document.relationships.append(Relationship(
                package_id(component), RelationshipType.GENERATED_FROM, source_id(source),
                comment=comment))


def _source_info(component: inv.Component) -> str | None:
    if component.sources is None:
        return None
    text = f"built from the Debian source package {component.sources.source}"
    if component.sources.built_using:
        text += "; Built-Using " + ", ".join(map(str, component.sources.built_using))
    return text


def license_of(license_: PackageLicense) -> LicenseExpression | SpdxNoAssertion:
    """An spdx-tools licence expression, or NOASSERTION."""
    if license_.expression == NOASSERTION:
        return SpdxNoAssertion()
    return parse_expression(license_.expression)


def source_purl(source: SourceRef) -> str:
    """The package URL of a Debian source package (``arch=source``, as the purl spec says)."""
    return PackageURL("deb", "debian", source.name, source.version, {"arch": "source"}).to_string()


def package_id(component: inv.Component) -> str:
    """The SPDX id of a component's package."""
    return ref_id("Package", component.key)


def source_id(source: SourceRef) -> str:
    """The SPDX id of a source package."""
    return ref_id("Source", f"{source.name}-{source.version}")


def ref_id(kind: str, text: str) -> str:
    """``SPDXRef-<kind>-<text>`` with the characters SPDX ids lack replaced; a replacement
    adds a digest of the text, so two texts never share an id."""
    slug = re.sub(r"[^A-Za-z0-9.-]", "-", text.strip("/"))
    if slug != text:
        slug += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"SPDXRef-{kind}-{slug}"
