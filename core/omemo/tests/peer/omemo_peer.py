#!/usr/bin/env python3
"""An OMEMO peer for linnet-omemo's interop tests, driven by JSON lines on stdin/stdout.

The cryptography is python-omemo's (the oldmemo and twomemo backends with their X3DH,
Double Ratchet and XEdDSA packages), an implementation independent of ours. This script only
moves bytes between the test and those backends, plus the XEP-0420 SCE envelope for OMEMO 2,
which python-omemo leaves to the application and which is built here from the XEP.

Requests (one JSON object per line), every byte string base64:
  {"cmd": "init", "version": "0.3"|"2", "jid": J, "device_id": N}
  {"cmd": "bundle"} -> {"ik", "spk_id", "spk", "spks", "prekeys": [[id, key], ...]}
  {"cmd": "set_bundle", "jid", "device_id", "bundle": {same shape}}
  {"cmd": "encrypt", "jid", "device_id", "text", "from"} -> {"key", "kex", "iv"?, "payload"}
  {"cmd": "decrypt", "jid", "device_id", "key", "kex", "iv"?, "payload"} -> {"text", "from"?}
  {"cmd": "prekey_count"} -> {"count"}
Each answer is {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

import asyncio
import base64
import json
import secrets
import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, Optional

import oldmemo
import oldmemo.oldmemo as om
import twomemo
import twomemo.twomemo as tm
import x3dh
import xeddsa
from omemo.session import Initiation
from omemo.storage import Just, Maybe, Nothing, Storage

SCE_NS = "urn:xmpp:sce:1"
CLIENT_NS = "jabber:client"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class MemoryStorage(Storage):
    def __init__(self) -> None:
        super().__init__(disable_cache=True)
        self.data: Dict[str, Any] = {}

    async def _load(self, key: str) -> Maybe[Any]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: Any) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


def build_envelope(text: str, sender: str) -> bytes:
    """XEP-0420 envelope with OMEMO 2's profile: content, random rpad, from."""
    envelope = ET.Element(f"{{{SCE_NS}}}envelope")
    content = ET.SubElement(envelope, f"{{{SCE_NS}}}content")
    ET.SubElement(content, f"{{{CLIENT_NS}}}body").text = text
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ET.SubElement(envelope, f"{{{SCE_NS}}}rpad").text = "".join(
        secrets.choice(alphabet) for _ in range(secrets.randbelow(201))
    )
    ET.SubElement(envelope, f"{{{SCE_NS}}}from", {"jid": sender})
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=False)


def parse_envelope(data: bytes) -> Dict[str, Optional[str]]:
    envelope = ET.fromstring(data.decode("utf-8"))
    if envelope.tag != f"{{{SCE_NS}}}envelope":
        raise ValueError("not an SCE envelope")
    if envelope.find(f"{{{SCE_NS}}}rpad") is None:
        raise ValueError("envelope without rpad")
    content = envelope.find(f"{{{SCE_NS}}}content")
    if content is None:
        raise ValueError("envelope without content")
    body = content.find(f"{{{CLIENT_NS}}}body")
    sender = envelope.find(f"{{{SCE_NS}}}from")
    return {
        "text": None if body is None else (body.text or ""),
        "from": None if sender is None else sender.get("jid"),
    }


class Peer:
    def __init__(self) -> None:
        self.version = ""
        self.backend: Any = None
        self.jid = ""
        self.device_id = 0
        self.bundles: Dict[tuple, Any] = {}

    @property
    def old(self) -> bool:
        return self.version == "0.3"

    async def init(self, req: Dict[str, Any]) -> Dict[str, Any]:
        self.version = req["version"]
        self.jid = req["jid"]
        self.device_id = int(req["device_id"])
        storage = MemoryStorage()
        self.backend = oldmemo.Oldmemo(storage) if self.old else twomemo.Twomemo(storage)
        if await self.backend.get_num_visible_pre_keys() == 0:
            await self.backend.generate_pre_keys(100)
        return {}

    async def bundle(self, _req: Dict[str, Any]) -> Dict[str, Any]:
        bundle = await self.backend.get_bundle(self.jid, self.device_id)
        b = bundle.bundle
        if self.old:
            enc = om.StateImpl.serialize_public_key
            ik = enc(xeddsa.ed25519_pub_to_curve25519_pub(b.identity_key))
            # As oldmemo publishes it: the Ed25519 sign bit rides in the signature's top bit.
            sig = bytearray(b.signed_pre_key_sig)
            sig[63] |= b.identity_key[31] & 0x80
            spks = bytes(sig)
        else:
            enc = lambda key: key  # noqa: E731
            ik = b.identity_key
            spks = b.signed_pre_key_sig
        return {
            "ik": b64(ik),
            "spk_id": bundle.signed_pre_key_id,
            "spk": b64(enc(b.signed_pre_key)),
            "spks": b64(spks),
            "prekeys": [[pid, b64(enc(pk))] for pk, pid in bundle.pre_key_ids.items()],
        }

    async def set_bundle(self, req: Dict[str, Any]) -> Dict[str, Any]:
        raw = req["bundle"]
        sig = unb64(raw["spks"])
        if self.old:
            parse = om.StateImpl.parse_public_key
            ik = xeddsa.curve25519_pub_to_ed25519_pub(parse(unb64(raw["ik"])), bool(sig[63] >> 7))
            sig_mut = bytearray(sig)
            sig_mut[63] &= 0x7F
            sig = bytes(sig_mut)
            impl = om.BundleImpl
        else:
            parse = lambda key: key  # noqa: E731
            ik = unb64(raw["ik"])
            impl = tm.BundleImpl
        pre_key_ids = {parse(unb64(key)): int(pid) for pid, key in raw["prekeys"]}
        self.bundles[(req["jid"], int(req["device_id"]))] = impl(
            req["jid"],
            int(req["device_id"]),
            x3dh.Bundle(ik, parse(unb64(raw["spk"])), sig, frozenset(pre_key_ids)),
            int(raw["spk_id"]),
            pre_key_ids,
        )
        return {}

    async def encrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, dev = req["jid"], int(req["device_id"])
        if self.old:
            plaintext = req["text"].encode("utf-8")
        else:
            plaintext = build_envelope(req["text"], req.get("from", self.jid))
        content, plain_key_material = await self.backend.encrypt_plaintext(plaintext)
        session = await self.backend.load_session(jid, dev)
        if session is None:
            session, encrypted = await self.backend.build_session_active(
                jid, dev, self.bundles[(jid, dev)], plain_key_material
            )
        else:
            encrypted = await self.backend.encrypt_key_material(session, plain_key_material)
        await self.backend.store_session(session)
        data = encrypted.serialize()
        # The initiator repeats the key exchange until the other side has answered.
        kex = session.initiation is Initiation.ACTIVE and not session.confirmed
        if kex:
            data = session.key_exchange.serialize(data)
            if self.old:
                data = data[0]
        out = {"key": b64(data), "kex": kex, "payload": b64(content.ciphertext)}
        if self.old:
            out["iv"] = b64(content.initialization_vector)
        return out

    async def decrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, dev = req["jid"], int(req["device_id"])
        mod = om if self.old else tm
        data = unb64(req["key"])
        session = await self.backend.load_session(jid, dev)
        if req["kex"]:
            if self.old:
                key_exchange, data = mod.KeyExchangeImpl.parse(data, False)
            else:
                key_exchange, data = mod.KeyExchangeImpl.parse(data)
            encrypted = mod.EncryptedKeyMaterialImpl.parse(data, jid, dev)
            if session is not None and session.key_exchange.builds_same_session(key_exchange):
                plain_key_material = await self.backend.decrypt_key_material(session, encrypted)
            else:
                session, plain_key_material = await self.backend.build_session_passive(
                    jid, dev, key_exchange, encrypted
                )
                await self.backend.delete_pre_key(session)
                await self.backend.generate_pre_keys(1)
        else:
            if session is None:
                raise ValueError("no session")
            encrypted = mod.EncryptedKeyMaterialImpl.parse(data, jid, dev)
            plain_key_material = await self.backend.decrypt_key_material(session, encrypted)
        await self.backend.store_session(session)
        if req.get("payload") is None:
            return {"text": None}
        if self.old:
            content = mod.ContentImpl(unb64(req["payload"]), unb64(req["iv"]))
        else:
            content = mod.ContentImpl(unb64(req["payload"]))
        plaintext = await self.backend.decrypt_plaintext(content, plain_key_material)
        if self.old:
            return {"text": plaintext.decode("utf-8")}
        return parse_envelope(plaintext)

    async def prekey_count(self, _req: Dict[str, Any]) -> Dict[str, Any]:
        return {"count": await self.backend.get_num_visible_pre_keys()}


async def main() -> None:
    peer = Peer()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            req = json.loads(line)
            handler = getattr(peer, req["cmd"])
            reply = {"ok": True, **(await handler(req))}
        except Exception as e:  # every failure is reported to the test, which decides
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
