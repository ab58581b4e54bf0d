"""ONIE's vocabulary: the names, codes and formats that ONIE defines and that the guest, the
factory server and NOS installers share: the installer and updater waterfall
(``waterfall``) and the EEPROM's TlvInfo format (``tlvinfo``). Facts from ONIE's
documentation (docs/onie-contract.md), written down once; no behaviour of the build.
"""
