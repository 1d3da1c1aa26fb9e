"""The libvirt layer of the compute agent: the driver (connections, lookups,
power operations, events), the domain XML and its Kova metadata, the image
cache and overlays, the NoCloud seed, and the host's traits and inventory."""
