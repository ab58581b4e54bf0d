"""ONIE's vocabulary: the names, codes and formats that ONIE defines and both the guest and the
factory server speak (the installer and updater waterfall today). Facts from ONIE's
documentation, written down once; no behaviour of the build.
"""
