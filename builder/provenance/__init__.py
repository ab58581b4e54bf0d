"""Provenance: what an image is made of and where it came from, in standard forms.

Owns the SBOMs (``spdx.py``: SPDX 2.3 JSON through spdx-tools; ``cyclonedx.py``: CycloneDX
1.6 JSON through cyclonedx-python-lib), both written from one ``inventory.Inventory`` (every
component with its package URL, digest, licence from ``licenses.py`` and source packages,
every initramfs file with its digests and component), and the signed provenance
(``statement.py``: an in-toto Statement with a SLSA Provenance v1 predicate, wrapped in a
DSSE envelope by ``dsse.py``, checked by ``verify.py``). ``documents.py`` writes them into a
build's staging folder. Takes the ``Recipe``, the ``Resolution`` and the initramfs ``Tree``;
hands on the file names and digests the manifest lists.
"""
