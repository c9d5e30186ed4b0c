#!/usr/bin/env python3
"""An independent OMEMO client (slixmpp + python-omemo) for Linnet's interop tests.

The Rust integration tests start it with the venv of scripts/omemo-peer-env and drive it
over stdin/stdout, one line per event or command:

  omemo_xmpp_peer.py --jid J --password P --ca CAFILE --host H --port N
                     --versions {03,2,both} --storage PATH [--register] [--debug]
                     [--label LABEL]

Out (stdout, flushed per line; logs go to stderr):
  READY <device_id>                               roster fetched, presence sent, own device
                                                  verified in PEP (device list + bundle)
  RECV <from> <ns> <device_id> <b64 body>         decrypted OMEMO message with a body
  EMPTY <from> <ns> <device_id>                   OMEMO message without a body (key
                                                  transport, heartbeat, session completion)
  UNDECRYPTABLE <from> <ns> <reason>              reason: exception class name, SCEMalformed,
                                                  SCEFromMismatch or UnsupportedVersion
  PLAIN <from> <b64 body>                         chat message with a body and no OMEMO
  SENT <stanza_id> | DEVICES <jid> <ns>=<id>,...  | ERROR <text>
  JOINED <room>                                   in the room (XEP-0045), its occupants known
  GRECV <room> <sender> <ns> <device_id> <b64>    decrypted group message; <sender> is the
                                                  real bare JID the room showed for its nick
  GUNDECRYPTABLE <room> <sender> <ns> <reason>    as UNDECRYPTABLE (SCEToMismatch: the
                                                  envelope names another recipient)
  LABELS <jid> <id>=<b64 label or ->,...          device labels as python-omemo accepted
                                                  them (signature checked; - for none)
In (stdin):
  SEND <bare_jid> <03|2|auto> <b64 body>   DEVICES <bare_jid>   LABELS <bare_jid>   QUIT
  JOIN <room> <nick>
  GSEND <room> <03|2|auto> <b64 body> <member,member,...> [<to>]
        (members: real bare JIDs; <to>: a JID for OMEMO 2's <to/> affix other than the
        room, as a server turning a private message into a group one would leave it)

--label gives a new device an OMEMO 2 label (python-omemo signs it).

<from> is a bare JID (for carbons: the inner message's sender), <ns> the namespace of the
<encrypted> element. Every device is trusted blindly. OMEMO 2 payloads are XEP-0420 SCE
envelopes, built and checked here because slixmpp-omemo 2.2.0 does not do SCE.
"""

import argparse
import asyncio
import base64
import json
import logging
import os
import secrets
import ssl
import sys
import tempfile
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import oldmemo
import oldmemo.etree
import slixmpp
import twomemo
import twomemo.etree
from omemo.session_manager import DeviceListDownloadFailed
from omemo.storage import Just, Nothing, Storage
from omemo.types import TrustLevel
from slixmpp.exceptions import IqError
from slixmpp.jid import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

# slixmpp-omemo's factory for a SessionManager whose PEP/message I/O goes through slixmpp.
# Its XEP_0384 plugin would always load both OMEMO versions, and --versions must choose,
# so the peer builds the session manager itself and reuses only this wiring.
from slixmpp_omemo.xep_0384 import _make_session_manager

NS_03 = oldmemo.oldmemo.NAMESPACE  # eu.siacs.conversations.axolotl
NS_2 = twomemo.twomemo.NAMESPACE  # urn:xmpp:omemo:2
NS_SCE = "urn:xmpp:sce:1"
NS_CLIENT = "jabber:client"
NS_CARBONS = "urn:xmpp:carbons:2"
# Priority order matters for SEND auto: python-omemo picks the first version a device has.
VERSIONS = {"03": [NS_03], "2": [NS_2], "both": [NS_2, NS_03]}
FALLBACK = "This message is OMEMO encrypted."

log = logging.getLogger("omemo-peer")


def emit(*words):
    print(" ".join(str(w) for w in words), flush=True)


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class JsonStorage(Storage):
    """python-omemo's key/value storage in one JSON file, so a restart is the same device."""

    def __init__(self, path):
        super().__init__()
        self.path = os.path.abspath(path)
        try:
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)
        except FileNotFoundError:
            self.data = {}

    def flush(self):
        # Temp file + fsync + rename: a peer killed mid-write keeps the previous state.
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".omemo-peer-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)  # make the rename durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def _load(self, key):
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key, value):
        self.data[key] = value
        self.flush()

    async def _delete(self, key):
        if self.data.pop(key, None) is not None:
            self.flush()


class SceError(Exception):
    pass


def sce_wrap(text, own_jid, to=None):
    """The XEP-0420 envelope that OMEMO 2 encrypts: body, random padding, sender, and for
    a group chat the room (XEP-0384 requires the <to/> affix there)."""
    pad = secrets.token_urlsafe(150)[: secrets.randbelow(201)]
    affix_to = "" if to is None else f"<to jid={quoteattr(to)}/>"
    return (
        f"<envelope xmlns='{NS_SCE}'><content><body xmlns='{NS_CLIENT}'>{escape(text)}</body>"
        f"</content><rpad>{pad}</rpad><from jid={quoteattr(own_jid)}/>{affix_to}</envelope>"
    ).encode("utf-8")


def sce_unwrap(data, sender, room=None):
    """Body of a decrypted SCE envelope (None if it has no body)."""
    try:
        envelope = ET.fromstring(data)
    except ET.ParseError as e:
        raise SceError("SCEMalformed") from e
    content = envelope.find(f"{{{NS_SCE}}}content")
    if envelope.tag != f"{{{NS_SCE}}}envelope" or content is None:
        raise SceError("SCEMalformed")
    # The <from/> affix binds the content to its sender: a server (or another account)
    # replaying someone else's ciphertext must not make it look like it came from here.
    affix = envelope.find(f"{{{NS_SCE}}}from")
    if affix is not None:
        try:
            claimed = JID(affix.get("jid", "")).bare
        except Exception as e:
            raise SceError("SCEMalformed") from e
        if claimed != sender:
            raise SceError("SCEFromMismatch")
    if room is not None:
        # A group message must name its room, so that a server cannot pass a private
        # message off as a group one (or the reverse).
        affix = envelope.find(f"{{{NS_SCE}}}to")
        if affix is None or affix.get("jid") != room:
            raise SceError("SCEToMismatch")
    body = content.find(f"{{{NS_CLIENT}}}body")
    return None if body is None else (body.text or "")


class Peer(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.namespaces = VERSIONS[args.versions]
        self.storage = JsonStorage(args.storage)
        self.sm = None
        self.device_id = None
        # One OMEMO operation at a time: decrypting a key exchange while encrypting for the
        # same device must not interleave at their network awaits.
        self.lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.quitting = False
        self.done = asyncio.get_running_loop().create_future()
        self.tasks = set()  # the loop keeps only weak references to tasks

        self.ssl_context = ssl.create_default_context(cafile=args.ca)
        # The test servers speak STARTTLS on the given port; no direct-TLS attempt first.
        self.enable_direct_tls = False
        self.roster.auto_authorize = True  # accept subscription requests...
        self.roster.auto_subscribe = True  # ...and subscribe back, so we can be a contact
        # xep_0334: python-omemo's own empty messages (session completion) carry <store/>.
        for plugin in ("xep_0030", "xep_0045", "xep_0060", "xep_0280", "xep_0334"):
            self.register_plugin(plugin)
        if args.register:
            self.register_plugin("xep_0077")
            # Register even if the server does not list the feature before auth.
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)

        self.add_event_handler("session_start", self.on_start)
        # slixmpp's "message" event only fires for stanzas with a <body>, and OMEMO's empty
        # messages have none: take every <message> and sort them out in on_message.
        every_message = MatchXPath(f"{{{self.default_ns}}}message")
        self.register_handler(Callback("omemo-peer messages", every_message, self.on_message))
        self.add_event_handler("carbon_received", lambda m: self.on_message(m["carbon_received"]))
        self.add_event_handler("carbon_sent", lambda m: self.on_message(m["carbon_sent"]))
        self.add_event_handler("failed_auth", lambda _: self.fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self.fail(f"connection failed: {e}"))
        self.add_event_handler("disconnected", self.on_disconnected)

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def fail(self, text):
        if not self.done.done():
            emit("ERROR", text)
            self.finish(1)

    def finish(self, code):
        if not self.done.done():
            self.done.set_result(code)

    def on_disconnected(self, _reason):
        if not self.quitting:
            self.fail("disconnected")

    async def on_register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
            log.info("registered %s", self.boundjid.bare)
        except IqError as e:
            if e.condition != "conflict":  # conflict: the account exists, just log in
                self.fail(f"registration failed: {e.condition}")

    async def on_start(self, _event):
        try:
            await self.start_omemo()
        except Exception as e:  # noqa: BLE001 - any failure to start is fatal to the peer
            log.exception("start failed")
            self.fail(f"start failed: {type(e).__name__}: {e}")

    async def start_omemo(self):
        await self.get_roster()
        own = self.boundjid.bare

        class SessionManager(_make_session_manager(self, None)):
            # Blind trust: every device of every JID is used. (The plugin object passed as
            # None above is only consulted by the trust hooks replaced here.)
            async def _evaluate_custom_trust_level(self, device):
                return TrustLevel.TRUSTED

            async def _make_trust_decision(self, undecided, identifier):
                pass

        backends = {
            NS_2: lambda: twomemo.Twomemo(self.storage),
            NS_03: lambda: oldmemo.Oldmemo(self.storage),
        }
        async with self.lock:
            # create() generates/loads the device, publishes bundles and device lists;
            # ensure_data_consistency() repairs them if the server lost them meanwhile.
            self.sm = await SessionManager.create(
                [backends[ns]() for ns in self.namespaces], self.storage, own,
                initial_own_label=self.args.label, undecided_trust_level_name="BLIND")
            await self.sm.ensure_data_consistency()
            # No MAM catch-up here: leave history-sync mode so key exchanges get answered.
            await self.sm.after_history_sync()
            self.device_id = (await self.sm.get_own_device_information())[0].device_id
            # READY promises our device is visible to others: check PEP, not our cache.
            for ns in self.namespaces:
                if self.device_id not in await self.sm._download_device_list(ns, own):
                    raise RuntimeError(f"own device {self.device_id} missing from {ns} device list")
                await self.sm._download_bundle(ns, own, self.device_id)
        await self.plugin["xep_0280"].enable()
        self.send_presence()
        self.ready.set()
        log.info("ready as %s device %d (%s)", own, self.device_id, " ".join(self.namespaces))
        emit("READY", self.device_id)
        self.spawn(self.read_commands())

    # --- receiving ---------------------------------------------------------------------

    def on_message(self, msg):
        # Carbon wrappers come back here through the carbon_* events with the inner message.
        wrapped = [msg.xml.find(f"{{{NS_CARBONS}}}{k}") for k in ("received", "sent")]
        if wrapped != [None, None] or msg["type"] == "error":
            return
        if msg["type"] == "groupchat":
            self.spawn(self.handle_group_message(msg))
            return
        self.spawn(self.handle_message(msg))

    async def handle_message(self, msg):
        sender = msg["from"].bare
        found = [ns for ns in (NS_2, NS_03) if msg.xml.find(f"{{{ns}}}encrypted") is not None]
        if not found:
            if msg["body"] and msg["type"] in ("chat", "normal"):
                emit("PLAIN", sender, b64(msg["body"]))
            return
        usable = [ns for ns in self.namespaces if ns in found]
        if not usable:
            emit("UNDECRYPTABLE", sender, found[0], "UnsupportedVersion")
            return
        ns = usable[0]  # with both versions in one stanza, prefer OMEMO 2 (as python-omemo does)
        element = msg.xml.find(f"{{{ns}}}encrypted")
        await self.ready.wait()
        async with self.lock:
            try:
                if ns == NS_2:
                    message = twomemo.etree.parse_message(element, sender)
                else:
                    message = await oldmemo.etree.parse_message(
                        element, sender, self.boundjid.bare, self.sm)
                if sender == self.boundjid.bare and message.device_id == self.device_id:
                    # Our own message to our bare JID (python-omemo's session completion
                    # for our other device) comes back to us too; nothing in it is for us.
                    return
                plaintext, device, _ = await self.sm.decrypt(message)
                if plaintext is None:
                    body = None
                elif ns == NS_2:
                    body = sce_unwrap(plaintext, sender)
                else:
                    body = plaintext.decode("utf-8")
            except SceError as e:
                emit("UNDECRYPTABLE", sender, ns, str(e))
                return
            except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
                log.warning("cannot decrypt from %s (%s)", sender, ns, exc_info=True)
                emit("UNDECRYPTABLE", sender, ns, type(e).__name__)
                return
        if body is None:
            emit("EMPTY", sender, ns, device.device_id)
        else:
            emit("RECV", sender, ns, device.device_id, b64(body))

    async def handle_group_message(self, msg):
        room = msg["from"].bare
        nick = msg["from"].resource
        found = [ns for ns in (NS_2, NS_03) if msg.xml.find(f"{{{ns}}}encrypted") is not None]
        usable = [ns for ns in self.namespaces if ns in found]
        if not usable or nick == self.plugin["xep_0045"].get_our_jid_in_room(JID(room)).split("/")[-1]:
            # Not OMEMO, or our own message reflected: nothing in it is for this device.
            return
        ns = usable[0]
        real = self.plugin["xep_0045"].get_jid_property(JID(room), nick, "jid")
        if not real:
            emit("GUNDECRYPTABLE", room, "?", ns, "SenderNotFound")
            return
        sender = JID(real).bare
        element = msg.xml.find(f"{{{ns}}}encrypted")
        await self.ready.wait()
        async with self.lock:
            try:
                if ns == NS_2:
                    message = twomemo.etree.parse_message(element, sender)
                else:
                    message = await oldmemo.etree.parse_message(
                        element, sender, self.boundjid.bare, self.sm)
                plaintext, device, _ = await self.sm.decrypt(message)
                if plaintext is None:
                    return
                body = sce_unwrap(plaintext, sender, room) if ns == NS_2 \
                    else plaintext.decode("utf-8")
            except SceError as e:
                emit("GUNDECRYPTABLE", room, sender, ns, str(e))
                return
            except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
                log.warning("cannot decrypt group message from %s (%s)", sender, ns, exc_info=True)
                emit("GUNDECRYPTABLE", room, sender, ns, type(e).__name__)
                return
        if body is not None:
            emit("GRECV", room, sender, ns, device.device_id, b64(body))

    # --- commands ------------------------------------------------------------------------

    async def read_commands(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode("utf-8")
            words = line.split()
            if not line or words[:1] == ["QUIT"]:
                break
            if not words:
                continue
            try:
                if words[0] == "SEND" and len(words) in (3, 4):
                    await self.cmd_send(words[1], words[2], words[3] if len(words) == 4 else "")
                elif words[0] == "DEVICES" and len(words) == 2:
                    await self.cmd_devices(words[1])
                elif words[0] == "JOIN" and len(words) == 3:
                    await self.cmd_join(words[1], words[2])
                elif words[0] == "GSEND" and len(words) in (5, 6):
                    await self.cmd_group_send(*words[1:])
                elif words[0] == "LABELS" and len(words) == 2:
                    await self.cmd_labels(words[1])
                else:
                    emit("ERROR", f"bad command: {line.strip()}")
            except Exception as e:  # noqa: BLE001 - report and keep serving commands
                log.warning("command failed: %s", line.strip(), exc_info=True)
                emit("ERROR", f"{words[0]} {type(e).__name__}: {e}".replace("\n", " "))
        await self.quit()

    async def refresh(self, bare_jid):
        """Re-read a JID's device lists from PEP (no +notify subscription is kept)."""
        lists = {}
        for ns in self.namespaces:
            lists[ns] = await self.sm._download_device_list(ns, bare_jid)
            await self.sm.update_device_list(ns, bare_jid, lists[ns])
        return lists

    async def cmd_send(self, to, version, body_b64):
        to = JID(to).bare
        text = base64.b64decode(body_b64, validate=True).decode("utf-8")
        if version not in ("03", "2", "auto"):
            raise ValueError(f"unknown version {version}")
        order = None if version == "auto" else VERSIONS[version]
        if order and order[0] not in self.namespaces:
            raise ValueError(f"version {version} not enabled (--versions {self.args.versions})")
        plaintexts = {}
        if NS_2 in self.namespaces:
            plaintexts[NS_2] = sce_wrap(text, self.boundjid.bare)
        if NS_03 in self.namespaces:
            plaintexts[NS_03] = text.encode("utf-8")  # OMEMO 0.3 encrypts the bare body
        async with self.lock:
            # The recipient may have just published a device; so may our own other devices.
            for jid in {to, self.boundjid.bare}:
                await self.refresh(jid)
            messages, errors = await self.sm.encrypt(frozenset({to}), plaintexts, order)
        for error in errors:
            log.warning("not encrypted for %s/%s (%s): %r", error.bare_jid, error.device_id,
                        error.namespace, error.exception)
        if not messages:
            raise RuntimeError(f"no device to encrypt for ({to})")
        msg = self.make_message(mto=to, mtype="chat", mbody=FALLBACK)
        used = []
        for message in messages:
            serialize = twomemo.etree.serialize_message if message.namespace == NS_2 \
                else oldmemo.etree.serialize_message
            msg.append(serialize(message))
            used.append(message.namespace)
        msg.enable("store")
        # EME names the version a client without it should mention; OMEMO 2 if present.
        eme = NS_2 if NS_2 in used else NS_03
        msg.append(ET.Element("{urn:xmpp:eme:0}encryption", namespace=eme, name="OMEMO"))
        msg.send()
        emit("SENT", msg["id"])

    async def cmd_join(self, room, nick):
        # No history: what the test sends after joining is what it looks for.
        await self.plugin["xep_0045"].join_muc_wait(JID(room), nick, maxchars=0, timeout=30)
        emit("JOINED", room)

    async def cmd_group_send(self, room, version, body_b64, members, to=None):
        """XEP-0384 §6.5: one message to the room, encrypted for every member's devices."""
        text = base64.b64decode(body_b64, validate=True).decode("utf-8")
        recipients = frozenset(JID(m).bare for m in members.split(",") if m)
        order = None if version == "auto" else VERSIONS[version]
        plaintexts = {}
        if NS_2 in self.namespaces:
            plaintexts[NS_2] = sce_wrap(text, self.boundjid.bare, to or room)
        if NS_03 in self.namespaces:
            plaintexts[NS_03] = text.encode("utf-8")
        async with self.lock:
            for jid in recipients | {self.boundjid.bare}:
                await self.refresh(jid)
            messages, errors = await self.sm.encrypt(recipients, plaintexts, order)
        for error in errors:
            log.warning("not encrypted for %s/%s (%s): %r", error.bare_jid, error.device_id,
                        error.namespace, error.exception)
        if not messages:
            raise RuntimeError("no device to encrypt for")
        msg = self.make_message(mto=JID(room), mtype="groupchat", mbody=FALLBACK)
        for message in messages:
            serialize = twomemo.etree.serialize_message if message.namespace == NS_2 \
                else oldmemo.etree.serialize_message
            msg.append(serialize(message))
        msg.enable("store")
        msg.send()
        emit("SENT", msg["id"])

    async def cmd_devices(self, bare_jid):
        bare_jid = JID(bare_jid).bare
        async with self.lock:
            try:
                lists = await self.refresh(bare_jid)
            except DeviceListDownloadFailed as e:
                raise RuntimeError(f"device list download failed: {e.__cause__!r}") from e
        groups = [f"{ns}={','.join(str(d) for d in sorted(lists[ns]))}" for ns in self.namespaces]
        emit("DEVICES", bare_jid, *groups)

    async def cmd_labels(self, bare_jid):
        bare_jid = JID(bare_jid).bare
        async with self.lock:
            await self.refresh(bare_jid)
            # Downloads the bundles of devices whose identity it does not know yet; labels
            # are checked against those keys as the lists are processed.
            await self.sm.get_device_information(bare_jid)
            await self.refresh(bare_jid)
            info = await self.sm.get_device_information(bare_jid)
        entries = [f"{d.device_id}={'-' if d.label is None else b64(d.label)}"
                   for d in sorted(info, key=lambda d: d.device_id)]
        emit("LABELS", bare_jid, ",".join(entries))

    async def quit(self):
        self.quitting = True
        if self.sm is not None:
            await self.sm.shutdown()
        await self.disconnect()
        self.finish(0)


async def run(args):
    peer = Peer(args)
    peer.connect(args.host, args.port)
    return await peer.done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--ca", required=True, help="CA file; server certificates are verified")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--versions", choices=sorted(VERSIONS), required=True)
    ap.add_argument("--storage", required=True, help="JSON file with the OMEMO device state")
    ap.add_argument("--register", action="store_true", help="create the account in-band first")
    ap.add_argument("--debug", action="store_true", help="debug logs (with stanzas) on stderr")
    ap.add_argument("--label", help="OMEMO 2 label of a new device")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.DEBUG if args.debug else logging.INFO)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
