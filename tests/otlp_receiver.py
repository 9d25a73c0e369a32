"""A real OTLP trace and metrics receiver on 127.0.0.1, run as its own process by the tests: HTTP/protobuf
(``http.server``, POST /v1/traces and /v1/metrics) or gRPC (grpcio's ``TraceServiceServicer`` and
``MetricsServiceServicer``), decoding with opentelemetry-proto.

    python tests/otlp_receiver.py --protocol grpc --out spans.jsonl

prints the port it listens on, then appends every span it receives to ``--out`` as one JSON line, and every
metric data point to ``--out`` + ``.metrics`` (each with its metric, scope, resource and export number), until it
is killed. Its own process keeps grpcio out of the test process, and "the collector died" is a kill away.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_lock = threading.Lock()


def _value(any_value: AnyValue) -> Any:
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which) if which else None


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Every span of an export request, flattened with its resource's and scope's names."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "status": span.status.code,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "events": [event.name for event in span.events],
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "scope": scope_spans.scope.name,
                        "resource": resource,
                    }
                )
    return spans


def _point(kind: str, point: Any) -> dict[str, Any]:
    """A number or histogram data point's fields."""
    fields: dict[str, Any] = {
        "attributes": {kv.key: _value(kv.value) for kv in point.attributes},
        "start": point.start_time_unix_nano,
        "time": point.time_unix_nano,
    }
    if kind == "histogram":
        fields.update(
            count=point.count,
            sum=point.sum,
            bucket_counts=list(point.bucket_counts),
            explicit_bounds=list(point.explicit_bounds),
            has_min=point.HasField("min"),
            exemplars=[{"trace_id": e.trace_id.hex(), "span_id": e.span_id.hex(), "value": e.as_double}
                       for e in point.exemplars],
        )  # fmt: skip
    else:
        fields["value"] = getattr(point, point.WhichOneof("value"))
    return fields


def points_of(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """Every data point of a metrics export request, flattened with its metric's, scope's and resource's names."""
    points = []
    for resource_metrics in request.resource_metrics:
        resource = {kv.key: _value(kv.value) for kv in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for point in data.data_points:
                    points.append(
                        {
                            "name": metric.name,
                            "unit": metric.unit,
                            "kind": kind,
                            "temporality": getattr(data, "aggregation_temporality", 0),
                            "monotonic": getattr(data, "is_monotonic", False),
                            "scope": scope.name,
                            "scope_version": scope.version,
                            "schema_url": scope_metrics.schema_url,
                            "resource": resource,
                            **_point(kind, point),
                        }
                    )
    return points


class _Sink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.exports = 0

    def write(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        lines = "".join(json.dumps(span) + "\n" for span in spans_of(request))
        with _lock, open(self.path, "a") as out:
            out.write(lines)

    def write_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with _lock, open(self.path + ".metrics", "a") as out:
            self.exports += 1
            out.write("".join(json.dumps({**p, "export": self.exports}) + "\n" for p in points_of(request)))


def serve_http(sink: _Sink) -> int:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path == "/v1/metrics":
                metrics = metrics_service_pb2.ExportMetricsServiceRequest()
                metrics.ParseFromString(body)
                sink.write_metrics(metrics)
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            else:
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                sink.write(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def serve_grpc(sink: _Sink) -> int:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            sink.write(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            sink.write_metrics(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    serve_grpc.server = server  # type: ignore[attr-defined]  # kept alive until the process ends
    return int(port)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["http/protobuf", "grpc"], required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sink = _Sink(args.out)
    port = serve_grpc(sink) if args.protocol == "grpc" else serve_http(sink)
    print(port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
