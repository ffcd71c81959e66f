#!/usr/bin/env python3
"""A Python client of ordinal, with stubs generated from api/proto.

It takes IDs from one node, as any gRPC language can:

  - ordinal.v1.SequencerService/GetNextId, STRONG (increasing across the cluster)
  - ordinal.v1.SequencerService/GetNextId, WEAK (unique, increasing per node)
  - ordinal.v1.SequencerService/GetNextIds, a block of --count IDs
  - spec.proto.runtime.v1.Runtime/GetNextId, Layotto's call

and prints one JSON object per call on stdout, for example

  {"call": "SequencerService/GetNextId", "mode": "STRONG", "id": 7}
  {"call": "SequencerService/GetNextIds", "mode": "STRONG", "first_id": 9, "count": 100}

Needs grpcio and protobuf (Debian: apt-get install python3-grpcio; pip:
grpcio). The stubs in gen/ come from generate.sh.

  python3 ordinal_example.py --addr 127.0.0.1:34904
  python3 ordinal_example.py --addr n1.example.com:34904 \\
      --tls-ca-file server-ca.pem --tls-cert-file app.pem --tls-key-file app-key.pem

The flags have the environment variables of ordinal's own client
commands: ORDINAL_ADDR, ORDINAL_TLS_CA_FILE, ORDINAL_TLS_CERT_FILE,
ORDINAL_TLS_KEY_FILE, ORDINAL_TLS_SERVER_NAME. Any --tls-* flag turns TLS
on; a client certificate needs the ids role (any certificate of the
node's client CA holds it).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

from spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc  # noqa: E402
from ordinal.v1 import sequencer_pb2, sequencer_pb2_grpc  # noqa: E402

STRONG = sequencer_pb2.SequencerOptions(increment=sequencer_pb2.SequencerOptions.AUTO_INCREMENT_STRONG)
# AUTO_INCREMENT_WEAK names WEAK explicitly; the zero value,
# AUTO_INCREMENT_UNSPECIFIED (and no options at all), is WEAK too.
WEAK = sequencer_pb2.SequencerOptions(increment=sequencer_pb2.SequencerOptions.AUTO_INCREMENT_WEAK)


def env(name, default=""):
    return os.environ.get("ORDINAL_" + name, default)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Take IDs from an ordinal node over gRPC.")
    p.add_argument("--addr", default=env("ADDR", "127.0.0.1:34904"), help="the node's client port, host:port")
    p.add_argument("--store", default="default", help="the store (namespace) of the key")
    p.add_argument("--key", default="python_example", help="the key to take IDs of")
    p.add_argument("--count", type=int, default=100, help="the size of the GetNextIds block")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds each call may take")
    p.add_argument("--tls-ca-file", default=env("TLS_CA_FILE"), help="PEM CA of the node's server certificate")
    p.add_argument("--tls-cert-file", default=env("TLS_CERT_FILE"), help="PEM client certificate (mutual TLS)")
    p.add_argument("--tls-key-file", default=env("TLS_KEY_FILE"), help="PEM key of --tls-cert-file")
    p.add_argument("--tls-server-name", default=env("TLS_SERVER_NAME"), help="name to verify instead of --addr's host")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CAs; implied by any --tls-* flag")
    return p.parse_args(argv)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel(args):
    """A channel to the node: plaintext, or TLS when any --tls-* is given."""
    if not (args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file or args.tls_server_name):
        return grpc.insecure_channel(args.addr)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        sys.exit("ordinal_example: --tls-cert-file and --tls-key-file go together")
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.tls_ca_file) if args.tls_ca_file else None,
        private_key=read(args.tls_key_file) if args.tls_key_file else None,
        certificate_chain=read(args.tls_cert_file) if args.tls_cert_file else None,
    )
    options = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return grpc.secure_channel(args.addr, creds, options=options)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main(argv):
    args = parse_args(argv)
    with channel(args) as ch:
        # Wait for the connection once, so a wrong address or certificate
        # fails here with a clear message rather than on the first call.
        try:
            grpc.channel_ready_future(ch).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            sys.exit("ordinal_example: could not connect to %s within %gs" % (args.addr, args.timeout))

        seq = sequencer_pb2_grpc.SequencerServiceStub(ch)
        for mode, opts in (("STRONG", STRONG), ("STRONG", STRONG), ("WEAK", WEAK)):
            resp = seq.GetNextId(
                sequencer_pb2.GetNextIdRequest(store_name=args.store, key=args.key, options=opts),
                timeout=args.timeout,
            )
            emit(call="SequencerService/GetNextId", mode=mode, id=resp.next_id)

        resp = seq.GetNextIds(
            sequencer_pb2.GetNextIdsRequest(store_name=args.store, key=args.key, options=STRONG, count=args.count),
            timeout=args.timeout,
        )
        emit(call="SequencerService/GetNextIds", mode="STRONG", first_id=resp.first_id, count=resp.count)

        # Layotto's Runtime service: what Layotto's SDKs call, with Layotto's
        # own names (STRONG, WEAK).
        runtime = runtime_pb2_grpc.RuntimeStub(ch)
        resp = runtime.GetNextId(
            runtime_pb2.GetNextIdRequest(
                store_name=args.store,
                key=args.key,
                options=runtime_pb2.SequencerOptions(increment=runtime_pb2.SequencerOptions.STRONG),
            ),
            timeout=args.timeout,
        )
        emit(call="Runtime/GetNextId", mode="STRONG", id=resp.next_id)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except grpc.RpcError as e:
        sys.exit("ordinal_example: %s: %s" % (e.code().name, e.details()))
