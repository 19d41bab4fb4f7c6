"""Tags and the list calls (what mlserve's delete-by-tags uses): ``AddTags``, ``ListTags``,
``DeleteTags``; ``ListModels``, ``ListEndpointConfigs``, ``ListEndpoints`` with ``NameContains``,
``CreationTimeAfter/Before``, ``StatusEquals``, ``SortBy``, ``SortOrder`` and ``MaxResults`` /
``NextToken`` pages.

A tag call on a resource that does not exist is a ValidationException here: SageMaker does not
document that case (the emulator's best reading).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import validation

if TYPE_CHECKING:
    from .api import Store


def _resource_arns(store: Store) -> set[str]:
    return ({m["ModelArn"] for m in store.models.values()}
            | {c["EndpointConfigArn"] for c in store.configs.values()}
            | {e.arn for e in store.endpoints.values()})


def _tagged(store: Store, arn: str) -> list[dict]:
    if arn not in _resource_arns(store):
        raise validation(f"Resource {arn} does not exist.")
    return store.tags.setdefault(arn, [])


def list_tags(store: Store, p: dict) -> dict:
    tags = _tagged(store, p["ResourceArn"])
    return _page(list(tags), p, "Tags")


def add_tags(store: Store, p: dict) -> dict:
    tags = _tagged(store, p["ResourceArn"])
    for tag in p["Tags"]:
        tags[:] = [t for t in tags if t["Key"] != tag["Key"]] + [tag]
    if len(tags) > 50:
        raise validation("A resource can have at most 50 tags.")
    return {"Tags": p["Tags"]}


def delete_tags(store: Store, p: dict) -> dict:
    tags = _tagged(store, p["ResourceArn"])
    tags[:] = [t for t in tags if t["Key"] not in set(p["TagKeys"])]
    return {}


def _page(items: list, p: dict, key: str) -> dict:
    start = int(p.get("NextToken") or 0)
    size = int(p.get("MaxResults") or 100)
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def _listing(rows: list[dict], p: dict, key: str, name_key: str) -> dict:
    if p.get("NameContains"):
        rows = [r for r in rows if p["NameContains"] in r[name_key]]
    for field, keep in (("CreationTimeAfter", lambda r, t: r["CreationTime"] > t),
                        ("CreationTimeBefore", lambda r, t: r["CreationTime"] < t)):
        if p.get(field) is not None:
            rows = [r for r in rows if keep(r, float(p[field]))]
    if p.get("StatusEquals"):
        rows = [r for r in rows if r.get("EndpointStatus") == p["StatusEquals"]]
    sort = {"Name": name_key, "CreationTime": "CreationTime",
            "Status": "EndpointStatus"}.get(p.get("SortBy") or "CreationTime", "CreationTime")
    rows.sort(key=lambda r: r.get(sort), reverse=(p.get("SortOrder") or "Descending") == "Descending")
    return _page(rows, p, key)


def list_models(store: Store, p: dict) -> dict:
    rows = [{"ModelName": m["ModelName"], "ModelArn": m["ModelArn"],
             "CreationTime": m["CreationTime"]} for m in store.models.values()]
    return _listing(rows, p, "Models", "ModelName")


def list_endpoint_configs(store: Store, p: dict) -> dict:
    rows = [{"EndpointConfigName": c["EndpointConfigName"],
             "EndpointConfigArn": c["EndpointConfigArn"], "CreationTime": c["CreationTime"]}
            for c in store.configs.values()]
    return _listing(rows, p, "EndpointConfigs", "EndpointConfigName")


def list_endpoints(store: Store, p: dict) -> dict:
    rows = [{"EndpointName": e.name, "EndpointArn": e.arn, "CreationTime": e.created,
             "LastModifiedTime": e.modified, "EndpointStatus": e.status}
            for e in store.endpoints.values()]
    return _listing(rows, p, "Endpoints", "EndpointName")
