"""A real OTLP trace receiver on 127.0.0.1, run as its own process by the tests: HTTP/protobuf (``http.server``,
POST /v1/traces) or gRPC (grpcio's ``TraceServiceServicer``), decoding with opentelemetry-proto.

    python tests/otlp_receiver.py --protocol grpc --out spans.jsonl

prints the port it listens on, then appends every span it receives to ``--out`` as one JSON line, until it is
killed. Its own process keeps grpcio out of the test process, and "the collector died" is a kill away.
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


class _Sink:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        lines = "".join(json.dumps(span) + "\n" for span in spans_of(request))
        with _lock, open(self.path, "a") as out:
            out.write(lines)


def serve_http(sink: _Sink) -> int:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
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
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            sink.write(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
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
