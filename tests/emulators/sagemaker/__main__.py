"""``python -m tests.emulators.sagemaker --docker-host unix://... --aws-endpoint http://moto``:
serve the SageMaker emulator until SIGTERM (see README.md). It writes its port to
``--port-file`` once it listens (``--port 0`` lets the kernel pick one)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.sagemaker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--docker-host", required=True, help="the engine instances run on")
    parser.add_argument("--aws-endpoint", required=True,
                        help="moto's URL: CloudWatch Logs (container output) and CloudWatch "
                             "(auto-rollback alarms)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--ecr-registry", help="registry address ECR image URLs are pulled from")
    parser.add_argument("--startup-timeout", type=float, default=60.0,
                        help="seconds an instance has to pass /ping when the variant does not "
                             "set ContainerStartupHealthCheckTimeoutInSeconds")
    parser.add_argument("--label", default=f"mlsv-sm-{os.getpid()}",
                        help="label (and name prefix) of every container started")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    import boto3

    from .api import Store
    from .fleet import Docker
    from .server import make_server
    from .. import serve_until_signalled

    aws = {"endpoint_url": args.aws_endpoint, "region_name": args.region,
           "aws_access_key_id": "emulator", "aws_secret_access_key": "emulator"}
    docker = Docker(args.docker_host, boto3.client("logs", **aws), args.label)
    store = Store(docker, args.region, args.ecr_registry, args.startup_timeout,
                  cloudwatch=boto3.client("cloudwatch", **aws),
                  autoscaling=boto3.client("application-autoscaling", **aws),
                  iam=boto3.client("iam", **aws))
    server = make_server(store, args.host, args.port)
    port = server.server_address[1]
    logging.info("SageMaker emulator listening on %s:%d", args.host, port)
    serve_until_signalled(server, args.port_file, docker.remove_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
