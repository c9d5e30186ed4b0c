#!/usr/bin/env python3
"""slixmpp as the peer client of scripts/bench-reconnect.

Protocol on stdout (one line each, times in seconds, monotonic):
  LOGIN <s>              cold login: connect() → roster received
  RECONNECT <s> <how>    after the connection dropped: drop noticed → usable again
                         (<how> is "resumed" for XEP-0198 resumption, "fresh" otherwise)
The bench drops the connection (through the proxy) after each line it reads; "QUIT" on
stdin ends the run.
"""
import argparse
import asyncio
import ssl
import sys
import time

import slixmpp


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca):
        super().__init__(jid, password)
        self.ca = ca
        self.register_plugin("xep_0198")
        self.register_plugin("xep_0199")
        ctx = ssl.create_default_context(cafile=ca)
        self.ssl_context = ctx
        # The proxy forwards the STARTTLS port; without this slixmpp tries direct TLS first.
        self.enable_direct_tls = False
        self.t_connect = None
        self.t_drop = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("session_resumed", self.on_resumed)
        self.add_event_handler("disconnected", self.on_disconnected)

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        now = time.monotonic()
        if self.t_drop is None:
            print(f"LOGIN {now - self.t_connect:.6f}", flush=True)
        else:
            print(f"RECONNECT {now - self.t_drop:.6f} fresh", flush=True)
            self.t_drop = None

    def on_resumed(self, _event):
        now = time.monotonic()
        if self.t_drop is not None:
            print(f"RECONNECT {now - self.t_drop:.6f} resumed", flush=True)
            self.t_drop = None

    def on_disconnected(self, _event):
        if getattr(self, "quitting", False):
            return
        if self.t_drop is None:
            self.t_drop = time.monotonic()
        # Come back at once, as a phone client does when the link returns.
        asyncio.get_event_loop().call_soon(self.reconnect_now)

    def reconnect_now(self):
        self.connect(self.host, self.port)


async def stdin_lines(peer):
    loop = asyncio.get_event_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "QUIT":
            peer.quitting = True
            peer.disconnect()
            await asyncio.sleep(0.2)
            loop.stop()
            return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    a = ap.parse_args()
    peer = Peer(a.jid, a.password, a.ca)
    peer.host, peer.port = a.host, a.port
    peer.t_connect = time.monotonic()
    peer.connect(a.host, a.port)
    loop = asyncio.get_event_loop()
    loop.create_task(stdin_lines(peer))
    loop.run_forever()


if __name__ == "__main__":
    main()
