"""Kova's scheduler (Nova's nova-scheduler), pure apart from its Placement calls.

* :mod:`.request` -- Instance + Flavor + Image + ServerGroup -> one Placement request;
* :mod:`.filters` and :mod:`.weighers` -- the scheduler filters and weighers;
* :mod:`.scheduler` -- candidates -> filters -> weighers -> claim;
* :mod:`.batch` -- many new Instances decided and claimed together.
"""
