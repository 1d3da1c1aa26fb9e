"""Hosts: the operator's view of them, the host monitor (Leases, Up/Down,
fencing) and the provider state (disabled trait, zone aggregate)."""
