"""The initramfs: the guest's file tree and the compressed archive made from it.

Owns the in-memory file ``tree``, the ELF (``elf``) and kernel-module (``kmod``) closures
that install programs and modules with what they need (their file facts remembered by
``facts``), the discovery plan (``discovery``), the transport and trust settings baked in
(``transports``, ``trust``), the assembly of all of it with the rendered templates
(``assemble``) and the cpio archive in cached, compressed layers (``cpio``). Takes a
``Recipe`` and a ``Resolution``; hands on a ``Tree`` and the written initramfs layers.
"""
