"""Instances: what to do next (plan), placing, the conductor, evacuation,
deletion, and the status they write."""
