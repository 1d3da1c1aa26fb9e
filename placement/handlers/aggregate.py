"""/resource_providers/{uuid}/aggregates (from 1.1; generations from 1.19)."""

from __future__ import annotations

from kova.placement.handlers.common import path, since
from kova.placement.objects import aggregate as agg_obj
from kova.placement.objects.resource_provider import get_provider, lock_and_bump
from kova.placement.request import cache_headers, check_accept, json_response
from kova.placement.schemas import body as schemas
from kova.placement.validation import canonical_uuid


def _body(req, aggregates, provider) -> dict:
    out = {"aggregates": aggregates}
    if req.want(19):
        out["resource_provider_generation"] = provider.generation
    return out


@since(1)
def show(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        provider = get_provider(conn, uuid)
        aggs = agg_obj.provider_aggregates(conn, provider)
    return json_response(_body(req, aggs, provider), 200,
                         cache_headers(req, provider.updated_at))


def put_body(version) -> dict:
    return schemas.AGGREGATES_PUT_1_19 if version >= (1, 19) else schemas.AGGREGATES_PUT


def _put_input(req):
    data = req.json(put_body(req.version))
    if req.want(19):
        aggs, generation = data["aggregates"], data["resource_provider_generation"]
    else:
        aggs, generation = data, None
    # stored in their 36-character form (the column is that wide); the
    # reply lists them in the order given, as OpenStack does
    return list(dict.fromkeys(canonical_uuid(a) for a in aggs)), generation


@since(1)
def put(req):
    uuid = path(req, "uuid")
    aggs, generation = _put_input(req)

    def _write(conn):
        if generation is not None:
            provider = lock_and_bump(
                conn, uuid, generation,
                "Resource provider's generation already changed. Please update the "
                "generation and try again.")
        else:
            provider = get_provider(conn, uuid, lock=True)
        agg_obj.set_provider_aggregates(conn, provider, aggs, None, bump=False)
        return provider

    return _put_reply(req, aggs, req.app.db.run_write(_write))


async def put_fast(req):
    """From 1.19 (generations) in one statement; None leaves it to ``put``."""
    if not req.want(19):
        return None
    aggs, generation = _put_input(req)
    provider = await req.app.fast.set_aggregates(path(req, "uuid"), generation, aggs)
    return None if provider is None else _put_reply(req, aggs, provider)


def _put_reply(req, aggs, provider):
    return json_response(_body(req, aggs, provider), 200, cache_headers(req))
