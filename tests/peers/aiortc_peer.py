#!/usr/bin/env python3
"""An independent WebRTC peer for Linnet's call interop tests: aiortc (PyPI), driven by
tests/tests/calls_aiortc.rs over stdin/stdout, one JSON object per line each way. Every
command gets exactly one answer line; failures answer {"error": "..."}. Logs go to stderr.

Its interpreter is the one scripts/call-peer-env prints (LINNET_CALL_PYTHON).

Commands (each one key, answered in order):
  {"tone": 1000}           send a sine tone of this frequency (before offer/answer; default
                           silence), as 48 kHz mono 20 ms frames
  {"video": true}          also send video: a synthetic moving bar, 320x240 at 15 fps, that
                           aiortc encodes (VP8 when the peer offers only VP8)
  {"record": "/x.wav"}     where {"stop"} writes the received audio (mono 48 kHz s16)
  {"make_offer": {}}       -> {"offer": sdp}, candidates included (aiortc gathers first)
  {"offer": sdp}           -> {"answer": sdp}, candidates included
  {"answer": sdp}          the answer to our offer -> {"ok": true}
  {"candidate": {"mid": "0", "candidate": "candidate:..."}}   a trickled remote candidate
  {"end_of_candidates": true}
  {"status": true}         -> {"connection", "ice", "audio_frames", "video_frames", ...}
  {"turn_credentials": {"secret": s, "user": u}}  -> {"username", "credential"}: TURN REST
                           (coturn use-auth-secret) credentials, base64(HMAC-SHA1(s, u))
  {"stop": true}           closes the connection, writes the recording ->
                           {"recorded": path, "frames": audio frames, "video_frames": n, ...}
"""

import array
import asyncio
import base64
import fractions
import hashlib
import hmac
import json
import logging
import math
import sys
import time
import wave

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
VIDEO_CLOCK = 90000
VIDEO_FPS = 15
WIDTH, HEIGHT = 320, 240

log = logging.getLogger("aiortc_peer")


class Paced:
    """Real-time pacing for a synthetic track: frame n is due at start + n * period."""

    def __init__(self, period):
        self.period = period
        self.start = None
        self.n = 0

    async def next(self):
        now = time.monotonic()
        if self.start is None:
            self.start = now
        else:
            delay = self.start + self.n * self.period - now
            if delay > 0:
                await asyncio.sleep(delay)
        n = self.n
        self.n += 1
        return n


class ToneTrack(MediaStreamTrack):
    """A sine tone (hz = 0: silence), 20 ms frames of 48 kHz mono s16."""

    kind = "audio"

    def __init__(self, hz, amplitude=0.3):
        super().__init__()
        self.hz = hz
        self.peak = amplitude * 32767
        self.clock = Paced(FRAME_SAMPLES / RATE)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        n = await self.clock.next()
        first = n * FRAME_SAMPLES
        # The phase of sample k is 2π·hz·k/RATE; reduce k·hz/RATE to its fractional part
        # first so a long call keeps its precision.
        pcm = array.array(
            "h",
            (
                int(self.peak * math.sin(2 * math.pi * (((first + i) * self.hz / RATE) % 1.0)))
                for i in range(FRAME_SAMPLES)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm.tobytes())
        frame.pts = first
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class BarTrack(MediaStreamTrack):
    """A bright vertical bar moving across a grey picture: something for an encoder to do."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.clock = Paced(1 / VIDEO_FPS)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        n = await self.clock.next()
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        luma = frame.planes[0]
        stride = luma.line_size
        x = (n * 8) % (WIDTH - 32)
        row = bytearray([96]) * stride
        row[x : x + 32] = bytes([235]) * 32
        luma.update(bytes(row) * (luma.buffer_size // stride))
        for chroma in frame.planes[1:]:
            chroma.update(bytes([128]) * chroma.buffer_size)
        frame.pts = n * (VIDEO_CLOCK // VIDEO_FPS)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class Peer:
    def __init__(self):
        self.pc = None
        self.tone = 0.0
        self.send_video = False
        self.record_path = None
        self.pcm = bytearray()
        self.audio_frames = 0
        self.video_frames = 0
        self.video_size = None
        self.tasks = []
        self.tracks_added = False

    def connection(self):
        if self.pc is None:
            # No ICE servers: aiortc's default is a public STUN server, which a test on
            # loopback must not depend on (gathering would wait for it).
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc = self.pc

            @pc.on("track")
            def on_track(track):
                log.info("remote %s track", track.kind)
                if track.kind == "audio":
                    self.tasks.append(asyncio.ensure_future(self.record_audio(track)))
                else:
                    self.tasks.append(asyncio.ensure_future(self.count_video(track)))

            @pc.on("connectionstatechange")
            def on_state():
                log.info("connection state %s", pc.connectionState)

        return self.pc

    def add_tracks(self):
        if self.tracks_added:
            return
        self.tracks_added = True
        pc = self.connection()
        pc.addTrack(ToneTrack(self.tone))
        if self.send_video:
            pc.addTrack(BarTrack())

    async def record_audio(self, track):
        # aiortc decodes Opus to 48 kHz stereo s16; mix down to mono.
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.audio_frames += 1
            for out in resampler.resample(frame):
                self.pcm.extend(bytes(out.planes[0])[: out.samples * 2])

    async def count_video(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.video_frames += 1
            self.video_size = [frame.width, frame.height]

    async def handle(self, cmd):
        if "tone" in cmd:
            self.tone = float(cmd["tone"])
            return {"ok": True}
        if "video" in cmd:
            self.send_video = bool(cmd["video"])
            return {"ok": True}
        if "record" in cmd:
            self.record_path = cmd["record"]
            return {"ok": True}
        if "make_offer" in cmd:
            pc = self.connection()
            self.add_tracks()
            # setLocalDescription returns once gathering is complete, so the SDP it leaves
            # in localDescription carries every candidate (aiortc does not trickle).
            await pc.setLocalDescription(await pc.createOffer())
            return {"offer": pc.localDescription.sdp}
        if "offer" in cmd:
            pc = self.connection()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=cmd["offer"], type="offer"))
            # After the remote offer: the tracks take over the transceivers it created.
            self.add_tracks()
            await pc.setLocalDescription(await pc.createAnswer())
            return {"answer": pc.localDescription.sdp}
        if "answer" in cmd:
            await self.connection().setRemoteDescription(
                RTCSessionDescription(sdp=cmd["answer"], type="answer")
            )
            return {"ok": True}
        if "candidate" in cmd:
            c = cmd["candidate"]
            value = c["candidate"].strip()
            if value.startswith("candidate:"):
                value = value[len("candidate:") :]
            candidate = candidate_from_sdp(value)
            candidate.sdpMid = c["mid"]
            await self.connection().addIceCandidate(candidate)
            return {"ok": True}
        if "end_of_candidates" in cmd:
            await self.connection().addIceCandidate(None)
            return {"ok": True}
        if "status" in cmd:
            pc = self.connection()
            return {
                "connection": pc.connectionState,
                "ice": pc.iceConnectionState,
                "audio_frames": self.audio_frames,
                "video_frames": self.video_frames,
                "video_size": self.video_size,
            }
        if "turn_credentials" in cmd:
            t = cmd["turn_credentials"]
            mac = hmac.new(t["secret"].encode(), t["user"].encode(), hashlib.sha1).digest()
            return {"username": t["user"], "credential": base64.b64encode(mac).decode()}
        if "stop" in cmd:
            return await self.stop()
        raise ValueError(f"unknown command {sorted(cmd)}")

    async def stop(self):
        if self.pc is not None:
            await self.pc.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.record_path is not None:
            with wave.open(self.record_path, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(bytes(self.pcm))
        return {
            "recorded": self.record_path,
            "frames": self.audio_frames,
            "samples": len(self.pcm) // 2,
            "video_frames": self.video_frames,
            "video_size": self.video_size,
        }


async def main():
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if "--debug" in sys.argv else logging.WARNING,
        format="aiortc_peer %(levelname)s %(name)s: %(message)s",
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    peer = Peer()
    while True:
        line = await reader.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            answer = await peer.handle(json.loads(line))
        except Exception as e:  # reported to the test, which fails on it
            log.exception("command failed")
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    await peer.stop()


if __name__ == "__main__":
    asyncio.run(main())
