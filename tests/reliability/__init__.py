"""The fault suite: each test injects one fault, checks that nothing
was lost, duplicated or overcommitted, and records its figures with
:func:`tests.reliability.record.record`.  ``hack/reliability-report.sh`` runs
the suite (long variants included) and renders ``docs/reliability.md`` from
the records with ``python -m tests.reliability.render``."""
