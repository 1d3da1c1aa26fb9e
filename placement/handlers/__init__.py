"""One module per Placement resource, as OpenStack Placement's ``handlers/``;
the route table that maps paths onto them is ``kova.placement.routes``."""
