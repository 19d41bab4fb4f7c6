"""``mlserve cost --refresh``: update catalogues from the providers' machine-readable price lists.

| ``refresh:`` | document (base URL override)                                   | row key            |
|--------------|----------------------------------------------------------------|--------------------|
| ``aws``      | price list offer file ``/offers/v1.0/aws/{service}/current/{region}/index.json`` (``MLSERVE_PRICES_AWS_URL``) | instance type, Linux, shared tenancy, on-demand |
| ``azure``    | Retail Prices API ``/api/retail/prices?$filter=...`` (``MLSERVE_PRICES_AZURE_URL``) | ``armSkuName``, Linux, consumption |
| ``runpod``   | GraphQL ``gpuTypes { id displayName securePrice }`` at ``/graphql`` (``MLSERVE_PRICES_RUNPOD_URL``; ``RUNPOD_API_KEY`` sent when set) | GPU id or name |
| ``lambda``   | ``/api/v1/instance-types`` (``MLSERVE_PRICES_LAMBDA_URL``; needs ``LAMBDA_API_KEY``) | instance type name |

A refreshed catalogue is written whole to the user's price directory (``catalogue.user_dir()``),
each updated row with today's date, the URL it was read from and ``unverified: false``; rows the
list does not have are kept as they were (and named in a warning). Nothing is written when a
document cannot be read (``ProviderError``, exit 1) or credentials are missing (exit 3).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional

import yaml

from ..errors import MissingCredentials, ProviderError
from . import catalogue
from .catalogue import PriceFile, PriceRow

DEFAULT_URLS = {"aws": "https://pricing.us-east-1.amazonaws.com",
                "azure": "https://prices.azure.com",
                "runpod": "https://api.runpod.io",
                "lambda": "https://cloud.lambdalabs.com"}
TIMEOUT = 60
MAX_AZURE_PAGES = 20


def base_url(source: str) -> str:
    return os.environ.get(f"MLSERVE_PRICES_{source.upper()}_URL", DEFAULT_URLS[source]).rstrip("/")


def _fetch(source: str, url: str, body: Optional[bytes] = None,
           headers: Optional[dict] = None) -> Any:
    request = urllib.request.Request(url, data=body, headers={
        "Accept": "application/json", "User-Agent": "mlserve-cost",
        **({"Content-Type": "application/json"} if body else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    except ValueError:
        reason = "the answer is not JSON"
    raise _unreadable(source, url, reason)


def _unreadable(source: str, url: str, reason: str) -> ProviderError:
    return ProviderError(f"could not read the {source} price list at {url}: {reason}",
                         fix=f"check the network, or point MLSERVE_PRICES_{source.upper()}_URL "
                             "at a copy of the document; the catalogue was not changed")


def _malformed(source: str, url: str, what: str) -> ProviderError:
    return ProviderError(f"the {source} price list at {url} is not shaped as expected: {what}",
                         fix="the provider may have changed its format; the catalogue was not "
                             "changed (report it)")


# --- one reader per price list: rows -> {row key: (USD per row kind, url)} -------------------

def _aws(file: PriceFile, rows: list[PriceRow]) -> dict[str, tuple[float, str]]:
    found: dict[str, tuple[float, str]] = {}
    for region in sorted({r.region for r in rows if r.region}):
        url = (f"{base_url('aws')}/offers/v1.0/aws/{file.refresh_service or 'AmazonEC2'}"
               f"/current/{region}/index.json")
        wanted = {r.key for r in rows if r.region == region}
        for key, usd in _aws_offer(url, wanted).items():
            found[f"{key}@{region}"] = (usd, url)
    return {r.key: found[f"{r.key}@{r.region}"] for r in rows if f"{r.key}@{r.region}" in found}


def _aws_offer(url: str, wanted: set[str]) -> dict[str, float]:
    """Instance type -> on-demand USD per hour, for the ``wanted`` types of one offer file.

    A region's EC2 offer file is hundreds of MB: it is copied to a temporary file as it arrives
    and read twice as a stream (``ijson``), products first, then their on-demand terms, so memory
    stays small whatever its size."""
    try:
        import ijson
    except ImportError:
        from ..errors import missing_extra
        raise missing_extra("prices", "ijson") from None
    import tempfile
    with tempfile.TemporaryFile() as copy:
        _download("aws", url, copy)
        try:
            copy.seek(0)
            skus, products = {}, 0
            for sku, product in ijson.kvitems(copy, "products"):
                products += 1
                if (key := _aws_key(product.get("attributes", {}))) in wanted:
                    skus[sku] = key
            if not products:
                raise _malformed("aws", url, "it lists no products")
            copy.seek(0)
            prices: dict[str, float] = {}
            for sku, terms in ijson.kvitems(copy, "terms.OnDemand"):
                if sku in skus:
                    usd = _hourly(terms)
                    if usd is not None:
                        prices[skus[sku]] = usd
        except (ijson.JSONError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed("aws", url, f"missing or odd {exc}") from None
    return prices


def _hourly(terms: dict) -> Optional[float]:
    for term in terms.values():
        for dim in term["priceDimensions"].values():
            if dim.get("unit") in ("Hrs", "Hours"):
                return float(dim["pricePerUnit"]["USD"])
    return None


def _download(source: str, url: str, into) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "mlserve-cost"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            shutil.copyfileobj(response, into, 1 << 20)
        return
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise _unreadable(source, url, reason)


def _aws_key(attrs: dict) -> Optional[str]:
    """The instance type a product prices, for Linux on-demand shared hosting; else None."""
    if "instanceName" in attrs:                              # SageMaker: ml.* hosting
        usage = str(attrs.get("usagetype", ""))
        return attrs["instanceName"] if "Host" in usage or attrs.get("component") == "Hosting" \
            else None
    wanted = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA"}
    if any(attrs.get(k) != v for k, v in wanted.items()):
        return None
    if attrs.get("capacitystatus", "Used") != "Used":
        return None
    return attrs.get("instanceType")


def _azure(file: PriceFile, rows: list[PriceRow]) -> dict[str, tuple[float, str]]:
    found: dict[str, tuple[float, str]] = {}
    for row in rows:
        query = (f"armRegionName eq '{row.region}' and armSkuName eq '{row.key}' and "
                 "priceType eq 'Consumption' and serviceName eq 'Virtual Machines'")
        url: Optional[str] = (f"{base_url('azure')}/api/retail/prices?"
                              + urllib.parse.urlencode({"$filter": query}))
        first = url
        for _ in range(MAX_AZURE_PAGES):
            if not url:
                break
            page = _fetch("azure", url)
            try:
                for item in page["Items"]:
                    if _azure_linux_on_demand(item) and item["armSkuName"] == row.key:
                        found[row.key] = (float(item["retailPrice"]), first)
                url = page.get("NextPageLink")
            except (KeyError, TypeError, ValueError) as exc:
                raise _malformed("azure", url, f"missing or odd {exc}") from None
    return found


def _azure_linux_on_demand(item: dict) -> bool:
    names = f"{item.get('productName', '')} {item.get('skuName', '')} {item.get('meterName', '')}"
    return (item.get("type") == "Consumption" and item.get("unitOfMeasure") == "1 Hour"
            and not any(w in names for w in ("Windows", "Spot", "Low Priority")))


def _runpod(file: PriceFile, rows: list[PriceRow]) -> dict[str, tuple[float, str]]:
    url = f"{base_url('runpod')}/graphql"
    key = os.environ.get("RUNPOD_API_KEY")
    doc = _fetch("runpod", url, json.dumps({
        "query": "query GpuTypes { gpuTypes { id displayName memoryInGb securePrice "
                 "communityPrice } }"}).encode(),
        {"Authorization": f"Bearer {key}"} if key else None)
    try:
        types = doc["data"]["gpuTypes"]
        prices = {}
        for gpu in types:
            if gpu.get("securePrice"):
                prices[gpu["id"]] = prices[gpu["displayName"]] = float(gpu["securePrice"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed("runpod", url, f"missing or odd {exc}") from None
    return {r.key: (prices[r.key], url) for r in rows if r.key in prices}


def _lambda(file: PriceFile, rows: list[PriceRow]) -> dict[str, tuple[float, str]]:
    key = os.environ.get("LAMBDA_API_KEY")
    if not key:
        raise MissingCredentials("Lambda's instance-types list needs an API key",
                                 fix="export LAMBDA_API_KEY=... (Lambda Cloud dashboard, API keys)")
    url = f"{base_url('lambda')}/api/v1/instance-types"
    doc = _fetch("lambda", url, headers={"Authorization": f"Bearer {key}"})
    try:
        prices = {name: entry["instance_type"]["price_cents_per_hour"] / 100
                  for name, entry in doc["data"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed("lambda", url, f"missing or odd {exc}") from None
    return {r.key: (prices[r.key], url) for r in rows if r.key in prices}


READERS: dict[str, Callable[[PriceFile, list[PriceRow]], dict[str, tuple[float, str]]]] = {
    "aws": _aws, "azure": _azure, "runpod": _runpod, "lambda": _lambda}


def refresh(targets: list[str], reporter) -> list[dict]:
    """Refresh every refreshable catalogue the TARGETs select (all without TARGET)."""
    files = catalogue.load()
    chosen = {f.catalogue for f, _ in catalogue.select(files, targets)}
    changes: list[dict] = []
    today = dt.date.today().isoformat()
    for name in sorted(chosen):
        file = files[name]
        if file.refresh is None:
            reporter.step(f"{name}: no machine-readable price list; last checked {file.checked}")
            continue
        reporter.step(f"{name}: reading the {file.refresh} price list")
        prices = READERS[file.refresh](file, list(file.rows))
        rows = []
        for row in file.rows:
            if row.key not in prices:
                reporter.warn(f"{row.id}: not in the {file.refresh} price list; kept as it was")
                rows.append(row)
                continue
            usd, url = prices[row.key]
            usd = usd / 3600 if row.kind.value == "second" else usd
            changes.append({"id": row.id, "before": row.usd, "after": usd, "source": url})
            rows.append(row.model_copy(update={"usd": usd, "date": today, "source": url,
                                               "unverified": False}))
        _write(file.model_copy(update={"rows": rows, "checked": today}))
    return changes


def _write(file: PriceFile) -> None:
    PriceFile.model_validate(file.model_dump(mode="json"))     # what is written loads again
    folder = catalogue.user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file.catalogue}.yaml"
    partial = path.with_suffix(".yaml.partial")
    partial.write_text(yaml.safe_dump(file.model_dump(mode="json", exclude_none=True),
                                      sort_keys=False), encoding="utf-8")
    os.replace(partial, path)
