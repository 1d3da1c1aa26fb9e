"""kova.placement."""
