"""Components: the real packages an image is made of, fetched, checked and cached.

Owns the Debian archive (``mirror`` read from the host's apt configuration, the signed index
checked by ``keyring``/``apt``, ``.deb`` unpacking in ``deb``), URL and local sources, the
content-addressed ``cache`` and the ``lock`` file. Takes a ``Recipe``; hands on a
``resolve.Resolution``: every component unpacked into a folder, with its version, sha256 and
origin, plus the pins a lock file records.
"""
