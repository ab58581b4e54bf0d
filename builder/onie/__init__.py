"""ONIE's vocabulary: file names, EEPROM TlvInfo codes and the other names and formats that
ONIE-compatible installers expect to find in the install environment (docs/onie-contract.md)."""
