"""kova.agents."""
