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
Calls (signalling only, no media): XEP-0353 Jingle Message Initiation, Jingle RTP over
ICE-UDP, and the DTLS fingerprints verified through legacy OMEMO as Conversations and Dino
do it ("OMEMO DTLS-SRTP verification", namespace NS_VERIFY below):
  PROPOSE <from_full> <sid>                       JMI propose (our own sent carbons ignored)
  PROCEEDED <from_full> <sid> <device_id|->       JMI proceed; the OMEMO device it announced
                                                  in NS_VERIFY <device/> (- without one)
  JMI <from_full> <sid> <action>                  any other JMI element (ringing, reject,
                                                  retract, finish, accept)
  JINGLE <action> <from_full> <sid>               a Jingle IQ set (answered with an empty
                                                  result first); then, for session-initiate,
                                                  session-accept, content-add and
                                                  content-accept, one line per <content>:
  FINGERPRINT <sid> <content> <device_id> <hash> <setup> <text>
                                                  an OMEMO-encrypted fingerprint, decrypted;
                                                  <device_id>: the OMEMO device vouching for it
  PLAINFINGERPRINT <sid> <content> <hash> <setup> <text>   a plaintext DTLS fingerprint
  BADFINGERPRINT <sid> <content> <reason>         an encrypted one that does not decrypt
                                                  (exception class name, Empty, NoEncrypted,
                                                  NotAFingerprint, UnsupportedVersion)
  NOFINGERPRINT <sid> <content>                   a content without any fingerprint
  INITIATED <sid> <text> | ACCEPTED <sid> <text|garbled>   the fingerprint we sent
  ERROR jingle <action> <condition>               error reply to a Jingle IQ we sent
                                                  (condition "timeout" without a reply)
  (<hash>/<setup>: - when the attribute is absent, as are other missing attributes;
  whitespace inside a word is dropped. A malformed stanza is reported, never fatal.)
In (stdin):
  SEND <bare_jid> <03|2|auto> <b64 body>   DEVICES <bare_jid>   LABELS <bare_jid>   QUIT
  JOIN <room> <nick>
  GSEND <room> <03|2|auto> <b64 body> <member,member,...> [<to>]
        (members: real bare JIDs; <to>: a JID for OMEMO 2's <to/> affix other than the
        room, as a server turning a private message into a group one would leave it)
  CALL <jid> <sid>                        JMI propose (audio); <jid> bare as clients do
  PROCEED <jid> <sid> [<device_id>|-]     JMI proceed announcing our device (READY's id,
                                          the default), another id, or none with -
  JMI <jid> <sid> <action>                any other JMI element: ringing, reject, retract,
                                          finish or accept (empty)
  INITIATE <full_jid> <sid> <device_id|-> session-initiate, initiator our full JID: one
        audio content '0' (opus/48000/2, rtcp-mux, BUNDLE group), ICE-UDP with random
        ufrag/pwd and no candidates, a random sha-256 fingerprint, setup actpass, encrypted
        with legacy OMEMO for that one device of <full_jid>'s account (plaintext with -)
  ACCEPT <full_jid> <sid> <device_id|->   session-accept (responder our full JID) of the
        session-initiate received with <sid>: its contents and BUNDLE group with their
        descriptions as they came, a new transport (random ufrag/pwd, no candidates, a
        random fingerprint, setup active) encrypted as for INITIATE
  GARBLED <full_jid> <sid> [<device_id>]  ACCEPT whose <encrypted> has a random key and
        payload (a hostile peer); <key rid>: the device, by default the one that vouched
        for the session-initiate's fingerprint, else every legacy device of the account
  TERMINATE <full_jid> <sid>              session-terminate, reason success
  Jingle IQs are sent without waiting for their reply (an error one gives ERROR jingle).

--label gives a new device an OMEMO 2 label (python-omemo signs it).

<from> is a bare JID (for carbons: the inner message's sender), <ns> the namespace of the
<encrypted> element. Every device is trusted blindly. OMEMO 2 payloads are XEP-0420 SCE
envelopes, built and checked here because slixmpp-omemo 2.2.0 does not do SCE.

An encrypted fingerprint is <fingerprint xmlns=NS_VERIFY hash= setup=> in place of the
plaintext <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0'>, holding a legacy OMEMO
(eu.siacs.conversations.axolotl) <encrypted> whose payload is the fingerprint text, with a
key for exactly the one device named (no other device, not even our own others). It needs
legacy OMEMO (--versions 03 or both). Decrypting one that starts a session (a key exchange)
makes python-omemo answer with an empty OMEMO chat message, an EMPTY on the other side.
"""

import argparse
import asyncio
import base64
import copy
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
from slixmpp.exceptions import IqError, IqTimeout
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
# Calls: XEP-0353 (JMI), XEP-0166/0167/0176/0320/0338, and the OMEMO DTLS-SRTP verification
# draft (its namespace really says "dlts").
NS_VERIFY = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification"
NS_JMI = "urn:xmpp:jingle-message:0"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_ICE_UDP = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_GROUPING = "urn:xmpp:jingle:apps:grouping:0"
# Jingle actions whose contents carry a transport with a DTLS fingerprint.
FINGERPRINT_ACTIONS = ("session-initiate", "session-accept", "content-add", "content-accept")
JMI_ACTIONS = ("ringing", "reject", "retract", "finish", "accept")
ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Priority order matters for SEND auto: python-omemo picks the first version a device has.
VERSIONS = {"03": [NS_03], "2": [NS_2], "both": [NS_2, NS_03]}
FALLBACK = "This message is OMEMO encrypted."

log = logging.getLogger("omemo-peer")


def emit(*words):
    print(" ".join(str(w) for w in words), flush=True)


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def word(value):
    """An attribute as one word of an event line: - when absent or empty, no whitespace."""
    value = "".join(str(value or "").split())
    return value or "-"


def random_fingerprint():
    """A sha-256 fingerprint as SDP and XEP-0320 write it: uppercase hex pairs, colons."""
    return ":".join(f"{b:02X}" for b in secrets.token_bytes(32))


def ice_string(length):
    return "".join(secrets.choice(ICE_CHARS) for _ in range(length))


def is_fingerprint(text):
    pairs = text.split(":")
    return len(pairs) >= 16 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in pairs)


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


class FingerprintError(Exception):
    """An encrypted fingerprint that is no fingerprint; the message is BADFINGERPRINT's reason."""


def find_fingerprint(content):
    """The fingerprint of a Jingle <content>'s transport: the OMEMO-verified one if any."""
    transports = [c for c in content if isinstance(c.tag, str) and c.tag.endswith("}transport")]
    for ns in (NS_VERIFY, NS_DTLS):
        for transport in transports:
            found = transport.find(f"{{{ns}}}fingerprint")
            if found is not None:
                return found
    return None


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
        # Set (under self.lock) for the duration of one encrypt() call: the only
        # (bare JID, device id) pairs python-omemo may encrypt for. None: every device.
        self.encrypt_only = None
        # Per Jingle sid: the last session-initiate received (for ACCEPT), and the OMEMO
        # device that vouched for its fingerprint (GARBLED's default recipient).
        self.initiates = {}
        self.vouchers = {}

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
        self.add_event_handler("carbon_sent",
                               lambda m: self.on_message(m["carbon_sent"], own_carbon=True))
        # Jingle requests; replies to our own IQs (an error one may echo our <jingle/>) are
        # dropped in on_jingle, slixmpp hands them to the waiting send() anyway.
        jingle = MatchXPath(f"{{{self.default_ns}}}iq/{{{NS_JINGLE}}}jingle")
        self.register_handler(Callback("omemo-peer jingle", jingle, self.on_jingle))
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
        peer = self

        class SessionManager(_make_session_manager(self, None)):
            # Blind trust: every device of every JID is used. (The plugin object passed as
            # None above is only consulted by the trust hooks replaced here.)
            async def _evaluate_custom_trust_level(self, device):
                # python-omemo encrypts for every trusted device of the recipients and of
                # our own account; the one way to encrypt for a single device is to
                # distrust the others while that encrypt() runs (decrypt() never runs
                # meanwhile: both hold peer.lock).
                only = peer.encrypt_only
                if only is not None and (device.bare_jid, device.device_id) not in only:
                    return TrustLevel.DISTRUSTED
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

    def on_message(self, msg, own_carbon=False):
        # Carbon wrappers come back here through the carbon_* events with the inner message.
        wrapped = [msg.xml.find(f"{{{NS_CARBONS}}}{k}") for k in ("received", "sent")]
        if wrapped != [None, None] or msg["type"] == "error":
            return
        jmi = [c for c in msg.xml if isinstance(c.tag, str) and c.tag.startswith(f"{{{NS_JMI}}}")]
        if jmi:
            if not own_carbon:  # our own propose/proceed/... sent from here or elsewhere
                self.on_jmi(msg, jmi[0])
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

    # --- calls: receiving -----------------------------------------------------------------

    def on_jmi(self, msg, element):
        try:
            sender = word(msg["from"].full)
            sid = word(element.get("id"))
            action = element.tag.split("}", 1)[1]
            if action == "propose":
                emit("PROPOSE", sender, sid)
            elif action == "proceed":
                device = element.find(f"{{{NS_VERIFY}}}device")
                emit("PROCEEDED", sender, sid, word(None if device is None else device.get("id")))
            else:
                emit("JMI", sender, sid, word(action))
        except Exception:  # noqa: BLE001 - a malformed stanza is never fatal
            log.warning("malformed JMI message", exc_info=True)

    def on_jingle(self, iq):
        if iq["type"] not in ("get", "set"):
            return  # a reply to one of ours: send() has it
        try:
            reply = iq.reply(clear=True)
            if iq["type"] == "get":  # no Jingle request is a get
                reply["error"]["condition"] = "bad-request"
            reply.send()
        except Exception:  # noqa: BLE001
            log.warning("cannot answer a Jingle IQ", exc_info=True)
        if iq["type"] == "set":
            self.spawn(self.handle_jingle(iq))

    async def handle_jingle(self, iq):
        try:
            await self.read_jingle(iq)
        except Exception:  # noqa: BLE001 - a malformed stanza is never fatal
            log.warning("malformed Jingle IQ", exc_info=True)

    async def read_jingle(self, iq):
        jingle = iq.xml.find(f"{{{NS_JINGLE}}}jingle")
        action = word(jingle.get("action"))
        sid = word(jingle.get("sid"))
        sender = iq["from"]
        emit("JINGLE", action, word(sender.full), sid)
        if action not in FINGERPRINT_ACTIONS:
            return
        if action == "session-initiate":
            self.initiates[sid] = copy.deepcopy(jingle)
            self.vouchers.pop(sid, None)
        await self.ready.wait()
        for content in jingle.findall(f"{{{NS_JINGLE}}}content"):
            name = word(content.get("name"))
            fingerprint = find_fingerprint(content)
            if fingerprint is None:
                emit("NOFINGERPRINT", sid, name)
                continue
            hash_, setup = word(fingerprint.get("hash")), word(fingerprint.get("setup"))
            if fingerprint.tag == f"{{{NS_DTLS}}}fingerprint":
                emit("PLAINFINGERPRINT", sid, name, hash_, setup, word(fingerprint.text))
                continue
            try:
                device_id, text = await self.decrypt_fingerprint(fingerprint, sender.bare)
            except FingerprintError as e:
                emit("BADFINGERPRINT", sid, name, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
                log.warning("cannot decrypt the fingerprint of %s/%s", sid, name, exc_info=True)
                emit("BADFINGERPRINT", sid, name, type(e).__name__)
                continue
            if action == "session-initiate":
                self.vouchers.setdefault(sid, device_id)
            emit("FINGERPRINT", sid, name, device_id, hash_, setup, text)

    async def decrypt_fingerprint(self, fingerprint, sender):
        """(OMEMO device that sent it, fingerprint text) of an NS_VERIFY <fingerprint>."""
        if NS_03 not in self.namespaces:
            raise FingerprintError("UnsupportedVersion")
        encrypted = fingerprint.find(f"{{{NS_03}}}encrypted")
        if encrypted is None:
            raise FingerprintError("NoEncrypted")
        async with self.lock:
            message = await oldmemo.etree.parse_message(
                encrypted, sender, self.boundjid.bare, self.sm)
            plaintext, device, _ = await self.sm.decrypt(message)
        if plaintext is None:
            raise FingerprintError("Empty")
        text = plaintext.decode("utf-8").strip()
        if not is_fingerprint(text):
            raise FingerprintError("NotAFingerprint")
        return device.device_id, text

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
                elif words[0] == "CALL" and len(words) == 3:
                    self.cmd_call(words[1], words[2])
                elif words[0] == "PROCEED" and len(words) in (3, 4):
                    self.cmd_proceed(*words[1:])
                elif words[0] == "JMI" and len(words) == 4 and words[3] in JMI_ACTIONS:
                    self.send_jmi(words[1], ET.Element(f"{{{NS_JMI}}}{words[3]}", id=words[2]))
                elif words[0] == "INITIATE" and len(words) == 4:
                    await self.cmd_initiate(*words[1:])
                elif words[0] == "ACCEPT" and len(words) == 4:
                    await self.cmd_accept(*words[1:])
                elif words[0] == "GARBLED" and len(words) in (3, 4):
                    await self.cmd_accept(*words[1:3], words[3] if len(words) == 4 else None,
                                          garbled=True)
                elif words[0] == "TERMINATE" and len(words) == 3:
                    self.cmd_terminate(words[1], words[2])
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

    # --- calls: sending -------------------------------------------------------------------

    def send_jmi(self, to, element):
        msg = self.make_message(mto=JID(to), mtype="chat")
        msg.append(element)
        msg.enable("store")
        msg.send()

    def cmd_call(self, to, sid):
        propose = ET.Element(f"{{{NS_JMI}}}propose", id=sid)
        ET.SubElement(propose, f"{{{NS_RTP}}}description", media="audio")
        self.send_jmi(to, propose)

    def cmd_proceed(self, to, sid, device=None):
        proceed = ET.Element(f"{{{NS_JMI}}}proceed", id=sid)
        if device is None:
            device = str(self.device_id) if NS_03 in self.namespaces else "-"
        if device != "-":
            ET.SubElement(proceed, f"{{{NS_VERIFY}}}device", id=str(int(device)))
        self.send_jmi(to, proceed)

    def send_jingle(self, to, jingle):
        async def send():
            action = jingle.get("action")
            try:
                await self.make_iq_set(jingle, ito=to).send(timeout=30)
            except IqError as e:
                emit("ERROR", "jingle", action, word(e.condition))
            except IqTimeout:
                emit("ERROR", "jingle", action, "timeout")
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                log.warning("cannot send Jingle %s", action, exc_info=True)
                emit("ERROR", "jingle", action, type(e).__name__)
        self.spawn(send())

    async def encrypt_for_device(self, text, bare_jid, device_id):
        """A legacy OMEMO <encrypted> of `text` with a key for that one device only."""
        if NS_03 not in self.namespaces:
            raise ValueError(f"legacy OMEMO not enabled (--versions {self.args.versions})")
        async with self.lock:
            await self.refresh(bare_jid)  # the device may be new (announced in a proceed)
            self.encrypt_only = {(bare_jid, device_id)}
            try:
                plaintexts = {ns: text.encode("utf-8") for ns in self.namespaces}
                messages, errors = await self.sm.encrypt(frozenset({bare_jid}), plaintexts, [NS_03])
            finally:
                self.encrypt_only = None
        for error in errors:
            log.warning("not encrypted for %s/%s (%s): %r", error.bare_jid, error.device_id,
                        error.namespace, error.exception)
        message = next((m for m in messages if m.namespace == NS_03), None)
        if message is None:
            raise RuntimeError(f"cannot encrypt for {bare_jid}/{device_id}")
        return oldmemo.etree.serialize_message(message)

    def garbled_encrypted(self, rids):
        """A legacy OMEMO <encrypted> of the right shape with random key and payload."""
        def rand(n):
            return base64.b64encode(secrets.token_bytes(n)).decode("ascii")
        encrypted = ET.Element(f"{{{NS_03}}}encrypted")
        header = ET.SubElement(encrypted, f"{{{NS_03}}}header", sid=str(self.device_id))
        for rid in rids:
            ET.SubElement(header, f"{{{NS_03}}}key", rid=str(rid)).text = rand(64)
        ET.SubElement(header, f"{{{NS_03}}}iv").text = rand(12)
        ET.SubElement(encrypted, f"{{{NS_03}}}payload").text = rand(95)
        return encrypted

    @staticmethod
    def ice_transport(ufrag, pwd, hash_, setup, text=None, encrypted=None):
        """An ICE-UDP transport without candidates: a plaintext fingerprint (`text`) or an
        OMEMO-verified one (`encrypted`)."""
        transport = ET.Element(f"{{{NS_ICE_UDP}}}transport", ufrag=ufrag, pwd=pwd)
        ns = NS_DTLS if encrypted is None else NS_VERIFY
        fingerprint = ET.SubElement(transport, f"{{{ns}}}fingerprint", hash=hash_, setup=setup)
        if encrypted is None:
            fingerprint.text = text
        else:
            fingerprint.append(encrypted)
        return transport

    async def cmd_initiate(self, to, sid, device):
        to = JID(to)
        device_id = None if device == "-" else int(device)
        text = random_fingerprint()
        encrypted = None if device_id is None \
            else await self.encrypt_for_device(text, to.bare, device_id)
        jingle = ET.Element(f"{{{NS_JINGLE}}}jingle", action="session-initiate",
                            initiator=self.boundjid.full, sid=sid)
        group = ET.SubElement(jingle, f"{{{NS_GROUPING}}}group", semantics="BUNDLE")
        ET.SubElement(group, f"{{{NS_GROUPING}}}content", name="0")
        content = ET.SubElement(jingle, f"{{{NS_JINGLE}}}content", creator="initiator",
                                name="0", senders="both")
        description = ET.SubElement(content, f"{{{NS_RTP}}}description", media="audio")
        ET.SubElement(description, f"{{{NS_RTP}}}payload-type",
                      {"id": "111", "name": "opus", "clockrate": "48000", "channels": "2"})
        ET.SubElement(description, f"{{{NS_RTP}}}rtcp-mux")
        content.append(self.ice_transport(ice_string(8), ice_string(24), "sha-256", "actpass",
                                          text, encrypted))
        self.send_jingle(to, jingle)
        emit("INITIATED", sid, text)

    async def cmd_accept(self, to, sid, device, garbled=False):
        """session-accept; with `garbled`, `device` is None or the <key rid> (see GARBLED)."""
        initiate = self.initiates.get(sid)
        if initiate is None:
            raise ValueError(f"no session-initiate received with sid {sid}")
        to = JID(to)
        if garbled:
            if device is not None:
                rids = [int(device)]
            elif sid in self.vouchers:
                rids = [self.vouchers[sid]]
            else:
                async with self.lock:
                    rids = sorted((await self.refresh(to.bare)).get(NS_03, {}))
            device_id = None
        else:
            device_id = None if device == "-" else int(device)
        text = random_fingerprint()
        ufrag, pwd = ice_string(8), ice_string(24)  # one transport for the whole BUNDLE
        jingle = ET.Element(f"{{{NS_JINGLE}}}jingle", action="session-accept",
                            responder=self.boundjid.full, sid=sid)
        for group in initiate.findall(f"{{{NS_GROUPING}}}group"):
            jingle.append(copy.deepcopy(group))
        for offered in initiate.findall(f"{{{NS_JINGLE}}}content"):
            content = ET.SubElement(jingle, f"{{{NS_JINGLE}}}content", dict(offered.attrib))
            for child in offered:
                if isinstance(child.tag, str) and child.tag.endswith("}description"):
                    content.append(copy.deepcopy(child))
            if garbled:
                encrypted = self.garbled_encrypted(rids)
            elif device_id is not None:
                # One OMEMO message per content: each one is a ratchet step of its own.
                encrypted = await self.encrypt_for_device(text, to.bare, device_id)
            else:
                encrypted = None
            content.append(self.ice_transport(ufrag, pwd, "sha-256", "active", text, encrypted))
        self.send_jingle(to, jingle)
        emit("ACCEPTED", sid, "garbled" if garbled else text)

    def cmd_terminate(self, to, sid):
        jingle = ET.Element(f"{{{NS_JINGLE}}}jingle", action="session-terminate", sid=sid)
        reason = ET.SubElement(jingle, f"{{{NS_JINGLE}}}reason")
        ET.SubElement(reason, f"{{{NS_JINGLE}}}success")
        self.send_jingle(JID(to), jingle)

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
