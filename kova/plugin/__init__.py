"""``kubectl kova``, the kubectl plugin (the ``kubectl-kova`` command)."""
