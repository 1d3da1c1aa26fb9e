"""Kova's API component: the Instance subresources (console, VNC, console
log, power actions) behind an APIService, as KubeVirt's virt-api serves
them.  See docs/api-component.md."""
