"""The lab that ``onie-builder boot`` uses, a product feature that the tests use too.

Owns how each architecture boots under QEMU and its serial ``Console`` (``qemu``), network
namespaces with tap and veth links (``netns``), dnsmasq and the HTTP(S) server run inside
them (``servers``, ``httpd``) and the one-guest install test bed of ``boot --netns``
(``testbed``). Takes a built image folder; hands on a running guest. Servers that only tests
start (tgt and iSNS, fault injection) live under ``tests/``. Beside the build: the build never
imports it.
"""
