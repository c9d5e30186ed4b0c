#!/usr/bin/env python3
"""python-omemo's side of scripts/bench-omemo: the operations linnet-bench-omemo measures in
Linnet, measured here with python-omemo's backends (oldmemo for OMEMO 0.3, twomemo for
OMEMO 2, on its x3dh, doubleratchet and xeddsa packages), between python-omemo devices.

Each operation goes through the backend the way python-omemo's SessionManager uses it: the
session is loaded from the (in-memory) storage, used, and stored again, just as Linnet's
SessionManager loads and saves its sessions through its store. Storage is python-omemo's own
Storage class with its cache on (its default) over a dict.

  (a) setup: initiator = encrypt the payload + build_session_active (X3DH with the bundle,
      signature check included) + key exchange serialized + session stored; responder =
      parse + build_session_passive + the used prekey deleted and one generated + session
      stored + payload decrypted;
  (b) fan-out: encrypt the payload once and its key for each of N devices whose sessions
      are confirmed (no key exchange attached);
  (c) decrypt: follow-ups in one chain (a batch of --batch messages decrypted in order;
      rate = batch / time) and after a turn (the sender has just read our reply, so every
      message carries a new ratchet key: a DH ratchet step; only the decrypt is timed).
For reference, (b) and the follow-ups of (c) are also measured with the sessions held as
objects between messages (no storage round trip): python-omemo's cryptography alone.

Usage: omemo_bench.py --version 0.3|2 --runs N --batch M --plaintext HEX
Prints one JSON object with the raw samples (seconds; rates in messages per second).
"""

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import oldmemo
import oldmemo.oldmemo as om
import twomemo
import twomemo.twomemo as tm
from omemo.session import Initiation
from omemo.storage import Just, Maybe, Nothing, Storage

FANOUT = (1, 10, 100)


class DictStorage(Storage):
    """python-omemo's Storage (cache on, its default) over a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.data: Dict[str, Any] = {}

    async def _load(self, key: str) -> Maybe[Any]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: Any) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


# A key for one recipient as it travels: (recipient device id, key bytes, key exchange?).
Key = Tuple[int, bytes, bool]
# A message: (sender device id, keys, payload ciphertext, iv for 0.3).
Message = Tuple[int, List[Key], bytes, Optional[bytes]]


class Device:
    def __init__(self, old: bool, jid: str, device_id: int) -> None:
        self.old = old
        self.mod: Any = om if old else tm
        self.jid = jid
        self.device_id = device_id
        self.backend: Any = (oldmemo.Oldmemo if old else twomemo.Twomemo)(DictStorage())

    async def start(self, prekeys: int) -> "Device":
        await self.backend.generate_pre_keys(prekeys)
        return self

    async def bundle(self) -> Any:
        return await self.backend.get_bundle(self.jid, self.device_id)

    def _content(self, content: Any) -> Tuple[bytes, Optional[bytes]]:
        return content.ciphertext, (content.initialization_vector if self.old else None)

    def serialize_key(self, session: Any, encrypted: Any) -> Key:
        data = encrypted.serialize()
        # The initiator repeats the key exchange until the other side has answered.
        kex = session.initiation is Initiation.ACTIVE and not session.confirmed
        if kex:
            data = session.key_exchange.serialize(data)
            if self.old:
                # oldmemo also returns the identity key's Ed25519 sign bit, which a real
                # receiver cannot know from the wire: it is dropped, as on the network.
                data = data[0]
        return session.device_id, data, kex

    async def initiate(self, peer: "Device", bundle: Any, plaintext: bytes) -> Message:
        """Session setup, initiator side: the first message, carrying the key exchange."""
        b = self.backend
        content, key_material = await b.encrypt_plaintext(plaintext)
        session, encrypted = await b.build_session_active(
            peer.jid, peer.device_id, bundle, key_material
        )
        await b.store_session(session)
        ciphertext, iv = self._content(content)
        return self.device_id, [self.serialize_key(session, encrypted)], ciphertext, iv

    async def encrypt(self, plaintext: bytes, recipients: List["Device"]) -> Message:
        """One message for devices with which sessions exist."""
        b = self.backend
        content, key_material = await b.encrypt_plaintext(plaintext)
        keys = []
        for r in recipients:
            session = await b.load_session(r.jid, r.device_id)
            encrypted = await b.encrypt_key_material(session, key_material)
            await b.store_session(session)
            keys.append(self.serialize_key(session, encrypted))
        ciphertext, iv = self._content(content)
        return self.device_id, keys, ciphertext, iv

    async def decrypt(self, sender: "Device", message: Message) -> bytes:
        b, mod = self.backend, self.mod
        _, keys, ciphertext, iv = message
        _, data, kex = next(k for k in keys if k[0] == self.device_id)
        jid, dev = sender.jid, sender.device_id
        session = await b.load_session(jid, dev)
        if kex:
            if self.old:
                key_exchange, data = mod.KeyExchangeImpl.parse(data, False)
            else:
                key_exchange, data = mod.KeyExchangeImpl.parse(data)
            encrypted = mod.EncryptedKeyMaterialImpl.parse(data, jid, dev)
            if session is not None and session.key_exchange.builds_same_session(key_exchange):
                key_material = await b.decrypt_key_material(session, encrypted)
            else:
                session, key_material = await b.build_session_passive(
                    jid, dev, key_exchange, encrypted
                )
                # A one-time prekey is used once; a new one replaces it.
                await b.delete_pre_key(session)
                await b.generate_pre_keys(1)
        else:
            if session is None:
                raise ValueError("no session")
            encrypted = mod.EncryptedKeyMaterialImpl.parse(data, jid, dev)
            key_material = await b.decrypt_key_material(session, encrypted)
        await b.store_session(session)
        content = mod.ContentImpl(ciphertext, iv) if self.old else mod.ContentImpl(ciphertext)
        return await b.decrypt_plaintext(content, key_material)


async def establish(a: Device, b: Device, plaintext: bytes) -> None:
    """a builds a session with b from b's bundle; b answers, so a's session is confirmed."""
    first = await a.initiate(b, await b.bundle(), plaintext)
    assert await b.decrypt(a, first) == plaintext
    reply = await b.encrypt(plaintext, [a])
    assert await a.decrypt(b, reply) == plaintext
    check = await a.encrypt(plaintext, [b])
    assert not check[1][0][2], "confirmed session still sends the key exchange"
    assert await b.decrypt(a, check) == plaintext


async def bench(old: bool, runs: int, batch: int, plaintext: bytes) -> Dict[str, Any]:
    clock = time.perf_counter
    out: Dict[str, Any] = {}

    # (a) session setup, the same two devices each run (the session is replaced).
    alice = await Device(old, "alice@bench.example", 1).start(100)
    bob = await Device(old, "bob@bench.example", 2).start(100)
    initiate: List[float] = []
    respond: List[float] = []
    for run in range(runs + 1):  # the first is a warm-up
        bundle = await bob.bundle()
        t = clock()
        message = await alice.initiate(bob, bundle, plaintext)
        t_init = clock() - t
        t = clock()
        got = await bob.decrypt(alice, message)
        t_resp = clock() - t
        assert got == plaintext
        if run:
            initiate.append(t_init)
            respond.append(t_resp)
    out["setup_initiate"] = initiate
    out["setup_respond"] = respond

    # (b) fan-out, from one device to 100 devices with confirmed sessions.
    sender = await Device(old, "sender@bench.example", 10).start(100)
    devices = []
    for i in range(max(FANOUT)):
        # Prekeys only to take part in the setup, which is not timed here.
        d = await Device(old, f"r{i}@bench.example", 100 + i).start(2)
        await establish(sender, d, plaintext)
        devices.append(d)
    fanout: Dict[str, List[float]] = {}
    fanout_memory: Dict[str, List[float]] = {}
    for n in FANOUT:
        samples = []
        for run in range(runs + 1):
            t = clock()
            message = await sender.encrypt(plaintext, devices[:n])
            elapsed = clock() - t
            assert len(message[1]) == n and not any(k[2] for k in message[1])
            if run:
                samples.append(elapsed)
        fanout[str(n)] = samples
        # The same with the sessions held as objects (no storage round trip): python-omemo's
        # cryptography alone, for reference.
        b = sender.backend
        sessions = [await b.load_session(d.jid, d.device_id) for d in devices[:n]]
        samples = []
        for run in range(runs + 1):
            t = clock()
            content, key_material = await b.encrypt_plaintext(plaintext)
            keys = [
                sender.serialize_key(s, await b.encrypt_key_material(s, key_material))
                for s in sessions
            ]
            elapsed = clock() - t
            assert len(keys) == n and content.ciphertext
            if run:
                samples.append(elapsed)
        for session in sessions:
            await b.store_session(session)
        fanout_memory[str(n)] = samples
    out["fanout"] = fanout
    out["fanout_memory"] = fanout_memory

    # (c) decrypt rate.
    alice = await Device(old, "alice2@bench.example", 3).start(100)
    bob = await Device(old, "bob2@bench.example", 4).start(100)
    await establish(alice, bob, plaintext)
    chain: List[float] = []
    for run in range(runs + 1):
        messages = [await alice.encrypt(plaintext, [bob]) for _ in range(batch)]
        t = clock()
        for m in messages:
            got = await bob.decrypt(alice, m)
        elapsed = clock() - t
        assert got == plaintext
        if run:
            chain.append(batch / elapsed)
    out["decrypt_chain"] = chain
    # The same with bob's session held as an object (no storage round trip).
    b, mod = bob.backend, bob.mod
    session = await b.load_session(alice.jid, alice.device_id)
    chain_memory: List[float] = []
    for run in range(runs + 1):
        messages = [await alice.encrypt(plaintext, [bob]) for _ in range(batch)]
        t = clock()
        for _, keys, ciphertext, iv in messages:
            encrypted = mod.EncryptedKeyMaterialImpl.parse(keys[0][1], alice.jid, alice.device_id)
            key_material = await b.decrypt_key_material(session, encrypted)
            content = mod.ContentImpl(ciphertext, iv) if old else mod.ContentImpl(ciphertext)
            got = await b.decrypt_plaintext(content, key_material)
        elapsed = clock() - t
        assert got == plaintext
        if run:
            chain_memory.append(batch / elapsed)
    await b.store_session(session)
    out["decrypt_chain_memory"] = chain_memory
    turn: List[float] = []
    for run in range(runs + 1):
        elapsed = 0.0
        for _ in range(batch):
            reply = await bob.encrypt(plaintext, [alice])
            await alice.decrypt(bob, reply)
            m = await alice.encrypt(plaintext, [bob])
            t = clock()
            got = await bob.decrypt(alice, m)
            elapsed += clock() - t
            assert got == plaintext
        if run:
            turn.append(batch / elapsed)
    out["decrypt_turn"] = turn
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--version", choices=["0.3", "2"], required=True)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--plaintext", required=True, help="hex")
    a = p.parse_args()
    result = asyncio.run(bench(a.version == "0.3", a.runs, a.batch, bytes.fromhex(a.plaintext)))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
