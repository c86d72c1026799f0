#!/usr/bin/env python3
"""A fedgate asker written from docs/protocol.md alone (aioquic + cbor2 + cryptography).

It dials a provider with a node's certificate, then runs hello, catalog and a verified query:
every batch is counted and hashed as received, and the trailer's count, digest and ECDSA P-256
signature (raw r||s in hex, over the transfer summary) are checked against the provider's
certificate. When the welcome names the provider's audit key (vouched for by its certificate),
the trailer's witness is checked too: the Ed25519 signed checkpoint and the RFC 6962 inclusion
proof of the entry the trailer cites. It also checks the conformance answers the document
promises (unsupported, malformed, bad-request). Exit 0 only if everything matches; one line per
check on stdout.
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import ssl
import struct
import sys

import cbor2
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PROTOCOL_VERSION = 1
ALPN = "fedgate/1"


class ProtocolError(Exception):
    pass


def frame(message, version=PROTOCOL_VERSION):
    """u32 big-endian body length, then the CBOR body {"v": version, "m": message}."""
    body = cbor2.dumps({"v": version, "m": message})
    return struct.pack(">I", len(body)) + body


def split_frames(data):
    """The frames of a finished stream, as (message, body bytes)."""
    out, at = [], 0
    while at < len(data):
        if len(data) - at < 4:
            raise ProtocolError(f"stream ended inside a frame header at byte {at}")
        (length,) = struct.unpack(">I", data[at : at + 4])
        body = data[at + 4 : at + 4 + length]
        if len(body) != length:
            raise ProtocolError(f"stream ended inside a {length}-byte frame")
        envelope = cbor2.loads(body)
        if envelope.get("v") != PROTOCOL_VERSION:
            raise ProtocolError(f"frame of version {envelope.get('v')}")
        out.append((envelope["m"], body))
        at += 4 + length
    return out


def kind_of(message):
    """Unit messages are a bare string; the others a one-entry map {kind: fields}."""
    if isinstance(message, str):
        return message, None
    if isinstance(message, dict) and len(message) == 1:
        return next(iter(message.items()))
    raise ProtocolError(f"not a message: {message!r}")


class Asker(QuicConnectionProtocol):
    """One request per bidirectional stream: write the frame, finish, read to the end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._streams = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self._streams:
            buf, done = self._streams[event.stream_id]
            buf.extend(event.data)
            if event.end_stream and not done.done():
                done.set_result(bytes(buf))
        elif isinstance(event, StreamReset) and event.stream_id in self._streams:
            _, done = self._streams[event.stream_id]
            if not done.done():
                done.set_exception(ProtocolError(f"stream reset with code {event.error_code:#x}"))
        elif isinstance(event, ConnectionTerminated):
            for _, done in self._streams.values():
                if not done.done():
                    done.set_exception(
                        ProtocolError(f"connection closed: {event.error_code:#x} {event.reason_phrase}")
                    )

    async def request(self, data, timeout=30):
        stream_id = self._quic.get_next_available_stream_id()
        done = self._loop.create_future()
        self._streams[stream_id] = (bytearray(), done)
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(done, timeout)

    def peer_chain(self):
        # What the provider presented in the handshake: its leaf, then its intermediates.
        tls = self._quic.tls
        return [tls._peer_certificate] + list(tls._peer_certificate_chain)


def verify_provider(chain, root, node_id):
    """Checks the provider's chain up to the federation root and its node id (docs/pki.md).

    Done here rather than by aioquic: its hostname check (service_identity) cannot parse the
    `urn:fedgate:node:` URI SAN, so TLS is set to not verify and this function does it all.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert in chain + [root]:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ProtocolError(f"certificate {cert.subject.rfc4514_string()} is not valid now")
    for cert, issuer in zip(chain, chain[1:] + [root]):
        cert.verify_directly_issued_by(issuer)
    if chain[-1].issuer != root.subject:
        raise ProtocolError("the provider's chain does not end at the federation root")
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if f"urn:fedgate:node:{node_id}" not in uris:
        raise ProtocolError(f"the provider's certificate names {uris}, not {node_id}")
    return chain[0].public_key()


def transfer_summary(provider, asker, dataset, purpose, count, digest, truncated):
    fields = ["fedgate transfer v1", provider, asker, dataset, purpose, str(count), digest, truncated or ""]
    return "\0".join(fields).encode()


def verify_signature(public_key, signature_hex, message):
    raw = bytes.fromhex(signature_hex)
    if len(raw) != 64:
        raise ProtocolError(f"signature is {len(raw)} bytes, expected 64 (r||s)")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))


def audit_key_of(welcome, provider_key, node_id):
    """The provider's audit checkpoint key from the welcome's statement, or None if it sent none."""
    audit_key = welcome.get("audit_key")
    if audit_key is None:
        return None
    statement = audit_key["statement"]
    verify_signature(provider_key, audit_key["signature"], statement.encode())
    lines = statement.split("\n")
    if lines[0] != "fedgate audit key statement v1" or lines[1] != f"node {node_id}":
        raise ProtocolError(f"welcome: the audit key statement is not {node_id}'s: {statement!r}")
    # name+hexkeyhash+base64(0x01 || Ed25519 public key)
    name, _, key = lines[2].removeprefix("key ").split("+", 2)
    raw = base64.b64decode(key)
    if name != f"fedgate.audit/{node_id}" or raw[0] != 1:
        raise ProtocolError(f"welcome: not {node_id}'s Ed25519 audit key: {lines[2]!r}")
    return name, Ed25519PublicKey.from_public_bytes(raw[1:])


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_witness(witness, audit_key, cited):
    """Checks a witness (docs/protocol.md, Witnessing); returns the checkpoint's size."""
    name, key = audit_key
    body, signatures = witness["checkpoint"].split("\n\n", 1)
    body += "\n"
    signed = False
    for line in signatures.splitlines():
        who, blob = line.removeprefix("\u2014 ").split(" ", 1)
        if who == name:
            key.verify(base64.b64decode(blob)[4:], body.encode())
            signed = True
    if not signed:
        raise ProtocolError(f"witness: the checkpoint is not signed by {name}")
    origin, size, root = body.split("\n")[:3]
    size, root = int(size), base64.b64decode(root)
    index = witness["entry"]
    if index != cited or index >= size:
        raise ProtocolError(f"witness: proves entry {index} of {size}, the trailer cites {cited}")
    # RFC 9162 section 2.1.3.2
    fn, sn, r = index, size - 1, bytes.fromhex(witness["leaf"])
    for p in (bytes.fromhex(h) for h in witness["path"]):
        if sn == 0:
            raise ProtocolError("witness: proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise ProtocolError("witness: the inclusion proof does not lead to the checkpoint's root")
    return size


CHECKS = {"passed": 0}


def ok(line):
    CHECKS["passed"] += 1
    print(f"ok   {line}")


def expect_error(frames, code, what):
    if len(frames) != 1:
        raise ProtocolError(f"{what}: expected one error frame, got {len(frames)} frames")
    kind, fields = kind_of(frames[0][0])
    if kind != "error" or fields.get("code") != code:
        raise ProtocolError(f"{what}: expected error {code}, got {frames[0][0]!r}")
    ok(f"{what}: {code} ({fields.get('message')})")


async def run(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    # The provider's TLS name is its node id with '@' turned into '.'.
    config.server_name = args.peer.replace("@", ".", 1)
    config.load_cert_chain(args.cert, args.key)
    config.verify_mode = ssl.CERT_NONE  # verified below, by verify_provider
    with open(args.trust, "rb") as f:
        root = x509.load_pem_x509_certificate(f.read())
    host, port = args.address.rsplit(":", 1)
    async with connect(host, int(port), configuration=config, create_protocol=Asker) as conn:
        provider_key = verify_provider(conn.peer_chain(), root, args.peer)
        ok(f"provider certificate: chain to the federation root, node id {args.peer}")
        # hello
        hello = {"hello": {"version": PROTOCOL_VERSION, "node": args.node, "software": "fedgate-interop-python"}}
        frames = split_frames(await conn.request(frame(hello)))
        kind, fields = kind_of(frames[0][0])
        if kind != "welcome" or fields["node"] != args.peer:
            raise ProtocolError(f"hello: expected welcome from {args.peer}, got {frames[0][0]!r}")
        audit_key = audit_key_of(fields, provider_key, args.peer)
        ok(f"hello: welcome from {fields['node']}, audit key {'vouched for by its certificate' if audit_key else 'not sent'}")

        # catalog
        frames = split_frames(await conn.request(frame("catalog-request")))
        kind, fields = kind_of(frames[0][0])
        if kind != "catalog":
            raise ProtocolError(f"catalog: got {frames[0][0]!r}")
        ids = [d["id"] for d in fields["catalog"]["datasets"]]
        if args.dataset not in ids:
            raise ProtocolError(f"catalog: {args.dataset} not in {ids}")
        dataset = next(d for d in fields["catalog"]["datasets"] if d["id"] == args.dataset)
        ok(f"catalog: {len(ids)} datasets, {args.dataset} has {len(dataset['fields'])} fields")

        # verified query
        filters = [list(f.split("=", 1)) for f in args.where]
        query = {"query": {"dataset": args.dataset, "purpose": args.purpose, "filters": filters, "limit": args.limit}}
        frames = split_frames(await conn.request(frame(query)))
        kind, header = kind_of(frames[0][0])
        if kind != "header":
            raise ProtocolError(f"query: expected a header, got {frames[0][0]!r}")
        digest, count, trailer, first_record = hashlib.sha256(), 0, None, None
        for message, body in frames[1:]:
            kind, fields = kind_of(message)
            if trailer is not None:
                raise ProtocolError("query: a frame after the trailer")
            if kind == "batch":
                for record in fields["records"]:
                    if len(record) != len(header["fields"]):
                        raise ProtocolError("query: a record does not match the header's fields")
                if count == 0 and fields["records"]:
                    first_record = fields["records"][0]
                count += len(fields["records"])
                digest.update(body)
            elif kind == "trailer":
                trailer = fields
            else:
                raise ProtocolError(f"query: incomplete transfer after {count} records: {message!r}")
        if trailer is None:
            raise ProtocolError(f"query: incomplete transfer after {count} records: no trailer")
        if trailer["count"] != count or trailer["digest"] != digest.hexdigest():
            raise ProtocolError(f"query: trailer {trailer['count']}/{trailer['digest']} != received {count}/{digest.hexdigest()}")
        summary = transfer_summary(
            args.peer, args.node, args.dataset, args.purpose, count, trailer["digest"], trailer.get("truncated")
        )
        verify_signature(provider_key, trailer["signature"], summary)
        witnessed = ""
        if audit_key is not None:
            if "witness" not in trailer:
                raise ProtocolError("query: the provider named its audit key but the trailer has no witness")
            size = verify_witness(trailer["witness"], audit_key, trailer.get("audit_seq"))
            witnessed = f", witnessed checkpoint of {size} entries verified"
        if count < args.min_records:
            raise ProtocolError(f"query: {count} records, expected at least {args.min_records}")
        ok(
            f"query: {count} records of {len(header['fields'])} fields, sha256 {trailer['digest'][:16]}..., "
            f"signature verified, truncated={trailer.get('truncated')}, provider audit entry {trailer.get('audit_seq')}"
            f"{witnessed}"
        )

        # filters travel as [field, value] pairs: ask again for the first record by its key
        key_field, key_value = header["fields"][0], first_record[0]
        query = {"query": {"dataset": args.dataset, "purpose": args.purpose, "filters": [[key_field, str(key_value)]], "limit": None}}
        frames = split_frames(await conn.request(frame(query)))
        records = [r for m, _ in frames if kind_of(m)[0] == "batch" for r in kind_of(m)[1]["records"]]
        if records != [first_record]:
            raise ProtocolError(f"filter {key_field}={key_value}: got {records!r}")
        ok(f"filter [{key_field!r}, {str(key_value)!r}]: exactly that record")

        # conformance answers
        expect_error(split_frames(await conn.request(frame("catalog-request", version=2))), "unsupported", "version 2")
        expect_error(split_frames(await conn.request(frame("subscribe"))), "unsupported", "unknown message kind")
        expect_error(split_frames(await conn.request(frame("catalog-request") + b"\0")), "malformed", "trailing byte")
        too_big = {"query": {"dataset": args.dataset, "purpose": args.purpose, "filters": [], "limit": 2**64 - 1}}
        expect_error(split_frames(await conn.request(frame(too_big))), "bad-request", "limit above i64::MAX")
        long = {"query": {"dataset": "d" * 100_000, "purpose": args.purpose, "filters": [], "limit": None}}
        expect_error(split_frames(await conn.request(frame(long))), "bad-request", "100 kB dataset name")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="provider QUIC HOST:PORT")
    p.add_argument("--peer", required=True, help="provider node id")
    p.add_argument("--node", required=True, help="our node id (as in our certificate)")
    p.add_argument("--cert", required=True, help="our node.crt (leaf then chain)")
    p.add_argument("--key", required=True, help="our node.key")
    p.add_argument("--trust", required=True, help="the federation root (trust.crt)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--purpose", required=True)
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--min-records", type=int, default=1)
    args = p.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # noqa: BLE001 - any failure is reported as one line
        print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr)
        print(f"interop: {CHECKS['passed']} passed, 1 failed")
        return 1
    print(f"interop: {CHECKS['passed']} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
