"""Kova's image store: image files served to the compute agents over HTTPS,
uploaded with ``kubectl kova image upload`` (``kova images serve``)."""
