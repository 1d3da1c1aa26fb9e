"""Concurrent claimers never exceed capacity and never lose an allocation.

Real concurrency: the ASGI app runs each handler in a worker thread with its
own database connection, and the claims are issued together from asyncio.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest

from kova.placement.app import create_app
from kova.placement.auth import NoAuth

H = {"openstack-api-version": "placement 1.39"}


@pytest.fixture(scope="module")
def pg_app(pg_database):
    from kova.dev.postgres import sqlalchemy_url

    app = create_app(sqlalchemy_url(pg_database), auth=NoAuth(), pool_size=16)
    yield app
    app.db.dispose()


async def _setup(client, n_providers, vcpus):
    rps = []
    for i in range(n_providers):
        r = await client.post("/resource_providers", json={"name": f"cc{i}-{uuid.uuid4().hex[:6]}"},
                              headers=H)
        u = r.json()["uuid"]
        r = await client.put(f"/resource_providers/{u}/inventories", headers=H, json={
            "resource_provider_generation": 0, "inventories": {"VCPU": {"total": vcpus}}})
        assert r.status_code == 200
        rps.append(u)
    return rps


async def _claim(client, consumer, rps, amount, rng):
    order = list(rps)
    rng.shuffle(order)
    for rp in order:
        for _attempt in range(20):
            r = await client.put(f"/allocations/{consumer}", headers=H, json={
                "allocations": {rp: {"resources": {"VCPU": amount}}},
                "project_id": "p", "user_id": "u", "consumer_generation": None,
                "consumer_type": "INSTANCE"})
            if r.status_code == 204:
                return rp
            assert r.status_code == 409, r.text
            if r.json()["errors"][0]["code"] != "placement.concurrent_update":
                break  # capacity: try the next provider
    return None


def test_concurrent_claims_never_exceed_capacity(pg_app):
    async def main():
        transport = httpx.ASGITransport(app=pg_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://placement") as client:
            rps = await _setup(client, 3, 10)
            rng = random.Random(7)
            amounts = [rng.choice([1, 2, 3]) for _ in range(120)]
            consumers = [str(uuid.uuid4()) for _ in amounts]
            results = await asyncio.gather(*[
                _claim(client, c, rps, a, random.Random(i))
                for i, (c, a) in enumerate(zip(consumers, amounts, strict=False))])
            used = {rp: 0 for rp in rps}
            for rp, amount in zip(results, amounts, strict=False):
                if rp is not None:
                    used[rp] += amount
            for rp in rps:
                r = await client.get(f"/resource_providers/{rp}/usages", headers=H)
                assert r.json()["usages"]["VCPU"] == used[rp] <= 10
            # every successful claim is recorded exactly once
            for consumer, rp, amount in zip(consumers, results, amounts, strict=False):
                r = await client.get(f"/allocations/{consumer}", headers=H)
                if rp is None:
                    assert r.json()["allocations"] == {}
                else:
                    assert r.json()["allocations"][rp]["resources"] == {"VCPU": amount}
            assert sum(used.values()) >= 28  # the providers were (nearly) filled
    asyncio.run(main())


def test_concurrent_writers_of_one_consumer(pg_app):
    async def main():
        transport = httpx.ASGITransport(app=pg_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://placement") as client:
            rps = await _setup(client, 1, 100)
            consumer = str(uuid.uuid4())
            body = {"allocations": {rps[0]: {"resources": {"VCPU": 1}}}, "project_id": "p",
                    "user_id": "u", "consumer_generation": None, "consumer_type": "INSTANCE"}
            rs = await asyncio.gather(*[client.put(f"/allocations/{consumer}", json=body,
                                                   headers=H) for _ in range(10)])
            codes = sorted(r.status_code for r in rs)
            assert codes.count(204) == 1 and codes.count(409) == 9
            r = await client.get(f"/resource_providers/{rps[0]}/usages", headers=H)
            assert r.json()["usages"]["VCPU"] == 1
    asyncio.run(main())


def test_claims_across_two_worker_processes(pg_database, tmp_path):
    """The real server with two worker processes: claims through both never
    exceed capacity, and each worker's candidates reflect the other's claims."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from kova.dev.postgres import sqlalchemy_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, KOVA_STATE=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url",
         sqlalchemy_url(pg_database), "--port", str(port), "--workers", "2", "--no-auth",
         "--log-level", "warning"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text())

        async def main():
            limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
                rps = await _setup(client, 2, 8)
                # warm both workers' snapshots (the module's database also holds
                # the providers of the other tests: ask about ours only)
                q = "/allocation_candidates?resources=VCPU:1&in_tree=%s"
                for _ in range(4):
                    for rp in rps:
                        await client.get(q % rp, headers=H)
                consumers = [str(uuid.uuid4()) for _ in range(40)]
                results = await asyncio.gather(*[
                    _claim(client, c, rps, 1, random.Random(i)) for i, c in enumerate(consumers)])
                assert sum(r is not None for r in results) == 16
                for rp in rps:
                    r = await client.get(f"/resource_providers/{rp}/usages", headers=H)
                    assert r.json()["usages"]["VCPU"] == 8
                # new connections land on either worker: all see the full providers
                for _ in range(6):
                    for rp in rps:
                        r = await client.get(q % rp, headers=H)
                        assert r.json()["allocation_requests"] == []
        asyncio.run(main())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
