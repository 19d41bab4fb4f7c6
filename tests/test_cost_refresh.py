"""``mlserve cost --refresh`` against local fakes of the providers' price documents.

A real HTTP server on loopback serves documents shaped like the real ones (AWS price list offer
files, Azure's Retail Prices API with its ``$filter`` and ``NextPageLink`` paging, Runpod's
GraphQL ``gpuTypes``, Lambda's ``/instance-types`` with its API-key check); the URLs reach it
through the documented ``MLSERVE_PRICES_*_URL`` overrides. The fakes filter as the real APIs do
(operating system, tenancy, Spot and Windows meters, SageMaker hosting against training), so a
reader that takes the wrong line picks the wrong price and fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
import yaml

from tests.helpers import REPO, run_cli

SCHEMA = json.loads((REPO / "mlserve" / "schemas" / "output" / "cost.json").read_text())


def _aws_product(sku: str, **attrs) -> dict:
    return {"sku": sku, "productFamily": "Compute Instance", "attributes": {
        "servicecode": "AmazonEC2", "location": "US East (N. Virginia)", "regionCode": "us-east-1",
        "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
        "capacitystatus": "Used", **attrs}}


def _aws_term(sku: str, usd: str, unit: str = "Hrs") -> dict:
    return {f"{sku}.JRTCKXETXF": {"offerTermCode": "JRTCKXETXF", "sku": sku,
                                  "effectiveDate": "2026-11-01T00:00:00Z", "termAttributes": {},
                                  "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                      "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                      "description": f"${usd} per On Demand Instance Hour",
                                      "beginRange": "0", "endRange": "Inf", "unit": unit,
                                      "pricePerUnit": {"USD": usd}, "appliesTo": []}}}}


EC2_OFFER = {
    "formatVersion": "v1.0", "disclaimer": "This pricing list is for informational purposes only.",
    "offerCode": "AmazonEC2", "version": "20261201000000", "publicationDate": "2026-12-01T00:00:00Z",
    "products": {
        "G5LINUX": _aws_product("G5LINUX", instanceType="g5.xlarge", usagetype="BoxUsage:g5.xlarge"),
        "G5WIN": _aws_product("G5WIN", instanceType="g5.xlarge", operatingSystem="Windows"),
        "G5DEDICATED": _aws_product("G5DEDICATED", instanceType="g5.xlarge", tenancy="Dedicated"),
        "G5RESERVED": _aws_product("G5RESERVED", instanceType="g5.xlarge",
                                   capacitystatus="UnusedCapacityReservation"),
        "M7G": _aws_product("M7G", instanceType="m7g.large"),
        "EBS": {"sku": "EBS", "productFamily": "Storage", "attributes": {"volumeType": "gp3"}},
    },
    "terms": {"OnDemand": {"G5LINUX": _aws_term("G5LINUX", "1.1110000000"),
                           "G5WIN": _aws_term("G5WIN", "9.0000000000"),
                           "G5DEDICATED": _aws_term("G5DEDICATED", "8.0000000000"),
                           "G5RESERVED": _aws_term("G5RESERVED", "7.0000000000"),
                           "M7G": _aws_term("M7G", "0.0900000000"),
                           "EBS": _aws_term("EBS", "0.08", unit="GB-Mo")},
              "Reserved": {"G5LINUX": _aws_term("G5LINUX", "0.5000000000")}},
}
SAGEMAKER_OFFER = {
    "formatVersion": "v1.0", "offerCode": "AmazonSageMaker", "version": "20261201000000",
    "products": {
        "HOST": {"sku": "HOST", "productFamily": "ML Instance", "attributes": {
            "instanceName": "ml.g5.xlarge", "usagetype": "USE1-Host:ml.g5.xlarge",
            "component": "Hosting", "regionCode": "us-east-1"}},
        "TRAIN": {"sku": "TRAIN", "productFamily": "ML Instance", "attributes": {
            "instanceName": "ml.g5.xlarge", "usagetype": "USE1-Train:ml.g5.xlarge",
            "component": "Training", "regionCode": "us-east-1"}},
    },
    "terms": {"OnDemand": {"HOST": _aws_term("HOST", "1.5000000000"),
                           "TRAIN": _aws_term("TRAIN", "9.9900000000")}},
}


def _azure_item(sku: str, price: float, product: str, meter: str, kind: str = "Consumption") -> dict:
    return {"currencyCode": "USD", "tierMinimumUnits": 0.0, "retailPrice": price,
            "unitPrice": price, "armRegionName": "eastus", "location": "US East",
            "effectiveStartDate": "2026-01-01T00:00:00Z", "meterId": "m", "meterName": meter,
            "productId": "p", "skuId": "s", "productName": product, "skuName": meter,
            "serviceName": "Virtual Machines", "serviceId": "DZH313Z7MMC8",
            "serviceFamily": "Compute", "unitOfMeasure": "1 Hour", "type": kind,
            "isPrimaryMeterRegion": True, "armSkuName": sku}


AZURE_ITEMS = [
    _azure_item("Standard_NC4as_T4_v3", 0.752, "Virtual Machines NCasT4_v3 Series Windows",
                "NC4as T4 v3"),
    _azure_item("Standard_NC4as_T4_v3", 0.09, "Virtual Machines NCasT4_v3 Series",
                "NC4as T4 v3 Spot"),
    _azure_item("Standard_NC4as_T4_v3", 0.2, "Virtual Machines NCasT4_v3 Series",
                "NC4as T4 v3 Low Priority"),
    _azure_item("Standard_NC4as_T4_v3", 0.31, "Virtual Machines NCasT4_v3 Series",
                "NC4as T4 v3", kind="Reservation"),
    _azure_item("Standard_NC4as_T4_v3", 0.555, "Virtual Machines NCasT4_v3 Series",
                "NC4as T4 v3"),
    _azure_item("Standard_NV36ads_A10_v5", 3.3, "Virtual Machines NVadsA10 v5 Series",
                "NV36ads A10 v5"),
]
RUNPOD_TYPES = [
    {"id": "NVIDIA L4", "displayName": "L4", "memoryInGb": 24, "securePrice": 0.48,
     "communityPrice": 0.39},
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80,
     "securePrice": 2.99, "communityPrice": 2.69},
    {"id": "NVIDIA GeForce RTX 3070", "displayName": "RTX 3070", "memoryInGb": 8,
     "securePrice": None, "communityPrice": 0.13},
]
LAMBDA_TYPES = {"data": {
    "gpu_1x_a10": {"instance_type": {"name": "gpu_1x_a10", "description": "1x A10 (24 GB PCIe)",
                                     "gpu_description": "A10 (24 GB PCIe)",
                                     "price_cents_per_hour": 75,
                                     "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400,
                                               "gpus": 1}},
                   "regions_with_capacity_available": [{"name": "us-east-1",
                                                        "description": "Virginia, USA"}]},
    "gpu_8x_h100_sxm5": {"instance_type": {"name": "gpu_8x_h100_sxm5", "description": "8x H100",
                                           "price_cents_per_hour": 2392, "specs": {}},
                         "regions_with_capacity_available": []}}}


class PriceLists:
    """The four price documents on one loopback server; ``requests`` logs (method, path, headers)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.fail_with: int | None = None
        self.aws_offers = {"AmazonEC2": EC2_OFFER, "AmazonSageMaker": SAGEMAKER_OFFER}
        self.big_offer = None          # a file served as the EC2 offer, in chunks, when set
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                owner.requests.append(("GET", self.path, dict(self.headers)))
                if owner.fail_with:
                    return self._send(owner.fail_with, {"message": "unavailable"})
                if owner.big_offer and "/AmazonEC2/" in self.path:
                    self.send_response(200)
                    self.send_header("Content-Length", str(owner.big_offer.stat().st_size))
                    self.end_headers()
                    with owner.big_offer.open("rb") as f:
                        shutil.copyfileobj(f, self.wfile, 1 << 20)
                    return
                status, body = owner.answer_get(self.path, self.headers)
                self._send(status, body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(("POST", self.path, dict(self.headers)))
                if self.path != "/graphql" or "gpuTypes" not in body.get("query", ""):
                    return self._send(400, {"errors": [{"message": "bad query"}]})
                self._send(200, {"data": {"gpuTypes": RUNPOD_TYPES}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer_get(self, path: str, headers) -> tuple[int, object]:
        parsed = urllib.parse.urlparse(path)
        parts = parsed.path.strip("/").split("/")
        if parts[:3] == ["offers", "v1.0", "aws"] and len(parts) == 7:
            offer = self.aws_offers.get(parts[3])
            return (200, offer) if offer and parts[5] == "us-east-1" else (404, {"m": "NoSuchKey"})
        if parsed.path == "/api/retail/prices":
            return 200, self.azure_page(urllib.parse.parse_qs(parsed.query))
        if parsed.path == "/api/v1/instance-types":
            if headers.get("Authorization") != "Bearer secret-lambda-key":
                return 401, {"error": {"code": "global/invalid-api-key",
                                       "message": "API key was invalid, expired, or deleted."}}
            return 200, LAMBDA_TYPES
        return 404, {"message": "not found"}

    def azure_page(self, query: dict) -> dict:
        """Like the Retail Prices API: ``$filter`` on eq clauses, pages of 2 with NextPageLink."""
        clauses = dict(c.split(" eq ") for c in query["$filter"][0].split(" and "))
        items = [i for i in AZURE_ITEMS
                 if all(str(i.get(k)) == v.strip("'") for k, v in clauses.items()
                        if k != "priceType")
                 and (clauses.get("priceType", "'Consumption'").strip("'") == i["type"])]
        skip = int(query.get("$skip", ["0"])[0])
        page = items[skip:skip + 2]
        more = skip + 2 < len(items)
        link = (f"{self.url}/api/retail/prices?"
                + urllib.parse.urlencode({"$filter": query["$filter"][0], "$skip": skip + 2}))
        return {"BillingCurrency": "USD", "CustomerEntityId": "Default",
                "CustomerEntityType": "Retail", "Items": page, "NextPageLink": link if more else None,
                "Count": len(page)}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lists(tmp_path, monkeypatch):
    served = PriceLists()
    for source in ("AWS", "AZURE", "RUNPOD", "LAMBDA"):
        monkeypatch.setenv(f"MLSERVE_PRICES_{source}_URL", served.url)
    monkeypatch.setenv("MLSERVE_PRICES_DIR", str(tmp_path / "prices"))
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    yield served
    served.stop()


def _rows(data: dict) -> dict:
    return {t["id"]: t["price"] for t in data["targets"]}


def test_aws_offer_file_updates_linux_shared_on_demand_prices(capsys, lists, tmp_path):
    result = run_cli(capsys, "cost", "aws-ec2", "--refresh", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    jsonschema.validate(data, SCHEMA)
    prices = _rows(data)
    assert prices["aws-ec2/g5.xlarge/us-east-1"]["usd"] == 1.111
    assert prices["aws-ec2/m7g.large/us-east-1"]["usd"] == 0.09
    g5 = prices["aws-ec2/g5.xlarge/us-east-1"]
    assert g5["unverified"] is False and g5["source"] == (
        f"{lists.url}/offers/v1.0/aws/AmazonEC2/current/us-east-1/index.json")
    # g4dn.xlarge is not in the (fake) list: kept as shipped, and named
    assert prices["aws-ec2/g4dn.xlarge/us-east-1"]["unverified"] is True
    assert {r["id"] for r in data["refreshed"]} == {"aws-ec2/g5.xlarge/us-east-1",
                                                   "aws-ec2/m7g.large/us-east-1"}
    assert "aws-ec2/g4dn.xlarge/us-east-1: not in the aws price list" in " ".join(result.err.split())
    written = yaml.safe_load((tmp_path / "prices" / "aws-ec2.yaml").read_text())
    assert written["checked"] == data["catalogues"][0]["checked"]
    # a later run without --refresh reads the refreshed copy
    again = json.loads(run_cli(capsys, "cost", "aws-ec2/g5.xlarge/us-east-1", "--json").out)
    assert _rows(again)["aws-ec2/g5.xlarge/us-east-1"]["usd"] == 1.111


def test_sagemaker_takes_the_hosting_price_not_training(capsys, lists):
    data = json.loads(run_cli(capsys, "cost", "aws-sagemaker", "--refresh", "--json").out)
    assert _rows(data)["aws-sagemaker/ml.g5.xlarge/us-east-1"]["usd"] == 1.5


def test_azure_retail_prices_follow_pages_and_skip_windows_spot_and_reservations(capsys, lists):
    result = run_cli(capsys, "cost", "azure-vm", "azure-ml", "--refresh", "--json")
    assert result.code == 0, result.err
    prices = _rows(json.loads(result.out))
    assert prices["azure-vm/Standard_NC4as_T4_v3/eastus"]["usd"] == 0.555
    assert prices["azure-ml/Standard_NC4as_T4_v3/eastus"]["usd"] == 0.555
    assert prices["azure-vm/Standard_NV36ads_A10_v5/eastus"]["usd"] == 3.3
    pages = [p for m, p, _ in lists.requests if p.startswith("/api/retail/prices")]
    assert any("%24skip=2" in p for p in pages)              # the second page was read
    assert all("armSkuName+eq" in p for p in pages)


def test_runpod_gpu_types_update_pods_and_send_the_key(capsys, lists, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-key")
    result = run_cli(capsys, "cost", "runpod-pods", "runpod-serverless", "--refresh", "--json")
    assert result.code == 0, result.err
    prices = _rows(json.loads(result.out))
    assert prices["runpod-pods/NVIDIA-L4"]["usd"] == 0.48
    assert prices["runpod-pods/NVIDIA-H100-80GB-HBM3"]["usd"] == 2.99
    assert prices["runpod-serverless/ADA_24-L4"]["usd"] == 0.00019      # no price list: as is
    (post,) = [h for m, _, h in lists.requests if m == "POST"]
    assert post["Authorization"] == "Bearer rp-key"
    shown = run_cli(capsys, "cost", "runpod-serverless", "--refresh")
    assert "runpod-serverless: no machine-readable price list" in " ".join(shown.err.split())


def test_lambda_needs_its_key_and_then_reads_cents_per_hour(capsys, lists, monkeypatch, tmp_path):
    refused = run_cli(capsys, "cost", "lambda", "--refresh")
    assert refused.code == 3 and "LAMBDA_API_KEY" in refused.err
    assert not (tmp_path / "prices" / "lambda.yaml").exists()
    monkeypatch.setenv("LAMBDA_API_KEY", "secret-lambda-key")
    result = run_cli(capsys, "cost", "lambda", "--refresh", "--json")
    assert result.code == 0, result.err
    assert _rows(json.loads(result.out))["lambda/gpu_1x_a10"]["usd"] == 0.75
    assert "secret-lambda-key" not in result.out + result.err
    assert "secret-lambda-key" not in (tmp_path / "prices" / "lambda.yaml").read_text()


def test_a_failing_price_list_changes_nothing_and_exits_1(capsys, lists, tmp_path):
    lists.fail_with = 503
    result = run_cli(capsys, "cost", "aws-ec2", "--refresh")
    assert result.code == 1
    assert "could not read the aws price list" in result.err and "HTTP 503" in result.err
    assert "MLSERVE_PRICES_AWS_URL" in " ".join(result.err.split())
    assert not (tmp_path / "prices").exists()


def test_a_document_of_another_shape_is_refused(capsys, lists, tmp_path):
    lists.aws_offers["AmazonEC2"] = {"formatVersion": "v2", "offers": []}
    result = run_cli(capsys, "cost", "aws-ec2", "--refresh")
    assert result.code == 1 and "not shaped as expected" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "prices" / "aws-ec2.yaml").exists()


def test_an_unreachable_price_list_is_exit_1(capsys, lists, monkeypatch):
    from tests.infra.net import free_port
    monkeypatch.setenv("MLSERVE_PRICES_AZURE_URL", f"http://127.0.0.1:{free_port()}")
    result = run_cli(capsys, "cost", "azure-vm", "--refresh")
    assert result.code == 1 and "could not read the azure price list" in result.err


def test_refresh_touches_only_the_catalogues_named(capsys, lists, tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDA_API_KEY", "secret-lambda-key")
    assert run_cli(capsys, "cost", "lambda", "--refresh").code == 0
    assert sorted(p.name for p in (tmp_path / "prices").iterdir()) == ["lambda.yaml"]
    assert {p for _, p, _ in lists.requests} == {"/api/v1/instance-types"}


@pytest.mark.slow
def test_a_large_offer_file_is_read_as_a_stream(lists, tmp_path):
    """An offer file of ~58 MB (the real EC2 ones are hundreds): the refresh, in its own process,
    stays below what loading the document whole takes (json.load: ~350 MB peak, measured)."""
    big = tmp_path / "ec2.json"
    with big.open("w") as f:
        f.write('{"formatVersion": "v1.0", "offerCode": "AmazonEC2", "products": {')
        for i in range(80000):
            f.write(json.dumps(f"SKU{i}") + ": " + json.dumps(_aws_product(
                f"SKU{i}", instanceType=f"x{i}.large", usagetype=f"BoxUsage:x{i}.large")) + ", ")
        f.write('"G5": ' + json.dumps(_aws_product("G5", instanceType="g5.xlarge")) + '}, ')
        f.write('"terms": {"OnDemand": {')
        for i in range(80000):
            f.write(json.dumps(f"SKU{i}") + ": " + json.dumps(_aws_term(f"SKU{i}", "0.1")) + ", ")
        f.write('"G5": ' + json.dumps(_aws_term("G5", "1.2340000000")) + "}}}")
    assert big.stat().st_size > 50 * 2**20
    lists.big_offer = big
    # The child's own peak: VmHWM of its address space, read as it exits. Not wait4's ru_maxrss:
    # that also counts the parent's resident memory at fork (the process's maxrss survives
    # exec), which is pytest's own, hundreds of MB late in a full run.
    peak_file = tmp_path / "peak"
    measured = (
        "import atexit, runpy, sys\n"
        "def _peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        f"            open({str(peak_file)!r}, 'w').write(line.split()[1])\n"
        "atexit.register(_peak)\n"
        "sys.argv = ['mlserve', *sys.argv[1:]]\n"
        "runpy.run_module('mlserve.cli', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", measured, "cost", "aws-ec2/g5.xlarge/us-east-1",
                           "--refresh", "--json"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr
    assert _rows(json.loads(done.stdout))["aws-ec2/g5.xlarge/us-east-1"]["usd"] == 1.234
    peak_mb = int(peak_file.read_text()) / 1024
    # json.load of this document peaks at ~350 MB; the interpreter and mlserve take ~60 MB
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"
