"""The factory: provisioning many switches from one site file.

Owns the site model and its loading (``site``, ``sitefile``, ``values``), the DHCP server
configurations for dnsmasq, Kea and ISC (``dhcp``), the HTTP(S) server that answers ONIE's
waterfall per device and takes status reports (``serve``, ``listener``, ``limits``), the
signed reports and device keys (``identity``, ``registry``, ``reports``) and the device table
and status client (``status``). Takes a site file and a built ``out/`` folder; hands on configurations, served
installers and device state. Beside the build: the build never imports it.
"""
