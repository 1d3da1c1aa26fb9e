"""Local development stack: control plane, Postgres, libvirt, test image."""
