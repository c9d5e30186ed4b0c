#!/usr/bin/env python3
"""slixmpp as the peer of scripts/bench-catchup: logs in, then reads the account's whole
message archive (XEP-0313) page by page, the way slixmpp's MAM plugin does it, and
prints one line:
  CATCHUP <messages> <seconds from session start to the last page> <peak RSS in KiB>
          <CPU seconds from session start>
"""
import argparse
import asyncio
import resource
import ssl
import sys
import time

import slixmpp


class Reader(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca, page):
        super().__init__(jid, password)
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0313")
        self.ssl_context = ssl.create_default_context(cafile=ca)
        # The bench's proxy forwards the STARTTLS port.
        self.enable_direct_tls = False
        self.page = page
        self.done = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)

    async def on_start(self, _event):
        t = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        n = 0
        async for _msg in self["xep_0313"].iterate(rsm={"max": self.page}):
            n += 1
        secs = time.monotonic() - t
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        print(f"CATCHUP {n} {secs:.6f} {usage.ru_maxrss} {cpu:.2f}", flush=True)
        self.disconnect()
        self.done.set_result(None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--page", type=int, required=True)
    a = ap.parse_args()
    r = Reader(a.jid, a.password, a.ca, a.page)
    r.connect(a.host, a.port)
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(r.done, 600))
    sys.exit(0)


if __name__ == "__main__":
    main()
