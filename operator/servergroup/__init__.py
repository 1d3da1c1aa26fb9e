"""Server groups: their status (members, hosts, PolicySatisfied)."""
