"""A moto S3 server on a free localhost port, and bucket sizes through boto3."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3

from bench.procs import free_port, stop, wait_for_port

KEY = SECRET = "testing"
# moto's access log: 127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 206 - (maybe coloured)
_REQUEST = re.compile(rb'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) ')


class Moto:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_path = work / "moto.log"
        self._seen = 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port("127.0.0.1", self.port)
        except RuntimeError:
            self.close()
            raise
        self.client = boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def requests(self) -> dict[str, int]:
        """HTTP requests the server logged since the last call, by method."""
        with open(self.log_path, "rb") as log:
            log.seek(self._seen)
            text = log.read()
        self._seen += len(text)
        return dict(Counter(m.decode() for m in _REQUEST.findall(text)))

    def make_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def bucket_bytes(self, name: str) -> int:
        total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name):
            total += sum(int(obj["Size"]) for obj in page.get("Contents", []))
        return total

    def close(self) -> None:
        stop(self.proc, timeout=15)
