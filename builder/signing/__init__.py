"""Signing: keys, the signed-installer format and the backends that sign.

Owns key generation and loading (``keys``), the appended signature block and its statement
(``format``, docs/signed-installer.md) and signers: a key file or an external command such as
an HSM client (``signers``). Takes files and keys; hands on signed files and parsed statements
that ``initramfs.trust`` and ``verify`` check exactly as the guest does.
"""
