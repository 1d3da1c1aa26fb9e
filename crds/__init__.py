"""kova.crds."""
