"""Backing up Placement's database with pg_dump and restoring it with
pg_restore, as docs/operations.md tells an operator to: after a restore from
a backup older than the latest changes, ``kova operator audit`` finds what the
API server knows and the restored database does not (an Instance created after
the backup: a missing allocation; one deleted after it: an orphan), and
``--heal`` makes Placement agree with the Instances again."""

from __future__ import annotations

import json
import subprocess

from tests.fixtures.operator import KOVA, ROOT, PlacementServer, cluster_on
from tests.helpers import wait_for


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def audit(cluster, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        KOVA + ["operator", "audit", "--kubeconfig", str(cluster.kubeconfig),
                "--placement-url", cluster.placement.url, "--namespace", cluster.ns,
                "--log-format", "json", *extra],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"audit printed no JSON (exit {proc.returncode}): "
                             f"{proc.stdout}\n{proc.stderr}") from None


def test_restore_then_audit_heal(k8s_client, kubeconfig, kova_crds, namespace, pg_database,
                                 tmp_path):
    serve = ("--database-url", pg_database)
    servers: list[PlacementServer] = []

    def start_placement(name: str) -> PlacementServer:
        (tmp_path / name).mkdir()
        servers.append(PlacementServer(tmp_path / name, serve))
        return servers[-1]

    try:
        _backup_restore_heal(k8s_client, kubeconfig, namespace, pg_database, tmp_path,
                             start_placement)
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.stop()


def _backup_restore_heal(k8s_client, kubeconfig, namespace, pg_database, tmp_path,
                         start_placement) -> None:
    placement = start_placement("p1")
    with cluster_on(k8s_client, kubeconfig, namespace, placement, tmp_path) as cluster:
        host = cluster.add_host("a")
        rp = cluster.hosts[host]
        operator = cluster.start_operator()
        uids = {n: cluster.create_instance(n)["metadata"]["uid"] for n in ("vm1", "vm2")}
        for n in uids:
            cluster.wait_scheduled(n)

        dump = tmp_path / "placement.dump"
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), libpq(pg_database)], check=True,
                       timeout=120)

        # after the backup: vm3 created, vm1 deleted
        uids["vm3"] = cluster.create_instance("vm3")["metadata"]["uid"]
        cluster.wait_scheduled("vm3")
        cluster.delete("vm1")
        wait_for(lambda: cluster.get("vm1") is None, 30, 0.2, "vm1 deleted")
        assert set(cluster.placement.all_consumers()) == {uids["vm2"], uids["vm3"]}

        # restore: writers stopped, the dump restored, Placement started again
        cluster.stop_operator(operator)
        placement.stop()
        subprocess.run(["pg_restore", "--clean", "--if-exists", "--single-transaction",
                        "-d", libpq(pg_database), str(dump)], check=True, timeout=120)
        cluster.placement = placement = start_placement("p2")
        assert set(placement.all_consumers()) == {uids["vm1"], uids["vm2"]}

        code, report = audit(cluster)
        assert code == 1, report
        assert report["orphanAllocations"] == [uids["vm1"]], report
        assert report["missingAllocations"] == [f"{namespace}/vm3"], report

        code, report = audit(cluster, "--heal")
        assert code == 0, report
        assert sorted(report["healed"]) == [f"missing {namespace}/vm3", f"orphan {uids['vm1']}"]
        assert placement.all_consumers() == {uids["vm2"]: rp, uids["vm3"]: rp}
        code, report = audit(cluster)
        assert code == 0 and report["orphanAllocations"] == report["missingAllocations"] == []
