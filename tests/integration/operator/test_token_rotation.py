"""The operator's API token rotates under it: ``kova operator run`` with a
kubeconfig whose user reads its token from a file (``tokenFile``, as a
projected service-account token), a real TokenRequest token bound to a
Secret; the file gets a new token and the old one is revoked (its Secret
deleted, so the API server answers it 401).  The operator reads the new
token and keeps scheduling."""

from __future__ import annotations


def test_operator_keeps_scheduling_after_its_token_file_is_rotated(cluster, rotating_token):
    rt = rotating_token
    cluster.add_host("h1")
    op = cluster.start_operator("--kubeconfig", str(rt.kubeconfig))
    cluster.create_instance("before")
    cluster.wait_scheduled("before")

    for round_ in range(2):
        old = rt.rotate()
        assert rt.status_with(old) == 401  # revoked: the old token is useless now
        assert rt.status_with(rt.tokens[-1][0]) == 200
        name = f"after-{round_}"
        cluster.create_instance(name)
        inst = cluster.wait_scheduled(name, timeout=60)
        assert inst["status"]["host"] == cluster.name("h1")
        assert op.poll() is None, cluster.operator_log()[-3000:]
    assert "API token file" in cluster.operator_log()  # it said so
