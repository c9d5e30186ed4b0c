package im.linnet.bindings

import im.linnet.ffi.LinnetException as Failure
import java.io.File
import java.nio.file.Files
import java.util.UUID
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

/**
 * The bindings against the host library and the local Prosody (scripts/servers): what the
 * Android app relies on, run on the JVM.
 */
class LinnetTest {
    private fun env(name: String): String =
        System.getenv(name) ?: error("$name is not set: run through scripts/test-kotlin")

    private val domain = env("PROSODY_DOMAIN")
    private val server = Server(env("PROSODY_HOST"), env("PROSODY_PORT").toUShort(), false)
    private val ca = File(env("LINNET_CA")).readText()

    private class MemoryKeys(var key: String? = null) : DatabaseKeyStore {
        override fun load(): String? = key

        override fun save(keyHex: String) {
            key = keyHex
        }
    }

    private fun fresh(tag: String) =
        "$tag${UUID.randomUUID().toString().replace("-", "").take(12)}@$domain"

    private fun open(keys: DatabaseKeyStore = MemoryKeys(), dir: String = tempDir()) =
        Linnet.open(dir, keys, ca, onlyExtraCa = true)

    /** A sine tone as the microphone: 20 ms of 48 kHz mono per frame. */
    private class ToneMicrophone(private val hz: Double) : Microphone {
        private var n = 0L

        override fun readFrame(): List<Short> = List(960) {
            val v = kotlin.math.sin(2 * Math.PI * hz * (n++) / 48_000.0) * 9_000
            v.toInt().toShort()
        }
    }

    /** Keeps what it plays. */
    private class RecordingSpeaker : Speaker {
        val pcm = java.util.Collections.synchronizedList(mutableListOf<Short>())

        override fun playFrame(pcm: List<Short>) {
            this.pcm.addAll(pcm)
        }

        /** The frequency of the last half second, by counting upward zero crossings. */
        fun frequency(): Double {
            val tail = synchronized(pcm) { pcm.takeLast(24_000) }
            val ups = tail.zipWithNext().count { (a, b) -> a < 0 && b >= 0 }
            return ups / 0.5
        }
    }

    private fun tempDir() = Files.createTempDirectory("linnet-kt").toString()

    @Test
    fun registerLogInSendAndReceive() = runBlocking {
        withTimeout(90_000) {
            open().use { a ->
                open().use { b ->
                    val (ja, jb) = fresh("kta") to fresh("ktb")
                    val accA = a.registerAccount(ja, "pass word", server)
                    val accB = b.registerAccount(jb, "pass word", server)
                    a.login(accA)
                    b.login(accB)
                    assertEquals(listOf(AccountRef(accA, ja)), a.accounts())

                    // The first snapshot is the current state: online.
                    val first = a.chatList.first()
                    assertTrue(first.accounts.single().connection is im.linnet.ffi.Connection.Online)

                    a.addContact(accA, jb, "B")
                    b.chatList.first { s -> s.accounts.any { ja in it.subscriptionRequests } }
                    b.approveContact(accB, ja)
                    a.chatList.first { s -> a.contacts(accA).any { it.jid == jb && it.subscription == "both" } }

                    a.sendMessage(accA, jb, "hello from kotlin ü")
                    val versions = mutableListOf<ULong>()
                    b.chatList
                        .onEach { versions += it.version }
                        .first { s -> s.conversations.any { it.lastMessage?.body == "hello from kotlin ü" } }
                    assertEquals("snapshots in order", versions.sorted(), versions)

                    val conversation = b.openConversation(accB, ja)
                    val snap = b.conversation(conversation).first { s ->
                        s.messages.any { it.body == "hello from kotlin ü" }
                    }
                    val m = snap.messages.single { it.body == "hello from kotlin ü" }
                    assertEquals(Direction.INCOMING, m.direction)
                    assertEquals("end-to-end encrypted", Encryption.OMEMO2, m.encryption)
                    assertEquals(DeviceTrust.BLIND, m.trust)

                    // The sender's side: delivered (the receipt came back).
                    val mine = a.openConversation(accA, jb)
                    a.conversation(mine).first { s ->
                        s.messages.any { it.body == "hello from kotlin ü" && it.state == DeliveryState.DELIVERED }
                    }
                    assertEquals(64, a.ownFingerprint(accA).length)
                    assertTrue(a.omemoDevices(accA, jb).any { it.fingerprint == b.ownFingerprint(accB) })
                    a.shutdown()
                    b.shutdown()
                }
            }
        }
    }

    @Test
    fun aCallRingsInTheChatListAndCarriesAudio() = runBlocking {
        withTimeout(90_000) {
            // Through the TURN relay: the machine may have no interface but loopback.
            val openRelay = { Linnet.open(tempDir(), MemoryKeys(), ca, onlyExtraCa = true, relayCalls = true) }
            openRelay().use { a ->
                openRelay().use { b ->
                    val (ja, jb) = fresh("kca") to fresh("kcb")
                    val accA = a.registerAccount(ja, "pass word", server)
                    val accB = b.registerAccount(jb, "pass word", server)
                    a.login(accA)
                    b.login(accB)
                    val aHears = RecordingSpeaker()
                    val bHears = RecordingSpeaker()
                    a.startCall(accA, jb, false, CallDevices(ToneMicrophone(600.0), aHears, null, null))
                    val ringing = b.chatList.first { s ->
                        s.calls.any { it.direction == CallDirection.INCOMING && it.state is CallRinging }
                    }.calls.first()
                    assertEquals(ja, ringing.peer)
                    b.acceptCall(ringing.id, CallDevices(ToneMicrophone(900.0), bHears, null, null))
                    val connected = a.chatList.first { s -> s.calls.any { it.state is CallConnected } }
                    assertTrue((connected.calls.first().state as CallConnected).relayed)
                    while (aHears.pcm.size < 72_000 || bHears.pcm.size < 72_000) {
                        kotlinx.coroutines.delay(100)
                    }
                    assertEquals(900.0, aHears.frequency(), 10.0)
                    assertEquals(600.0, bHears.frequency(), 10.0)
                    b.endCall(ringing.id)
                    val ended = a.chatList.first { s -> s.calls.any { it.state is CallEnded } }
                    assertEquals(
                        CallHungUp(byPeer = true),
                        (ended.calls.first().state as CallEnded).reason,
                    )
                    a.shutdown()
                    b.shutdown()
                }
            }
        }
    }

    @Test
    fun aFlowStartsWithTheCurrentSnapshotAndKeepsOrder() = runBlocking {
        withTimeout(60_000) {
            open().use { c ->
                val acc = c.addAccount(fresh("ktf"), "pass word", server)
                val peer = fresh("ktg")
                val conv = c.openConversation(acc, peer)
                // Offline: messages are queued (never lost) and show at once as pending.
                // Snapshots are whole states, so a collector may skip some: what it gets
                // starts with the current state and only ever moves forward.
                val got = mutableListOf<Conversation>()
                c.conversation(conv)
                    .onEach {
                        got += it
                        if (got.size == 1) repeat(3) { i -> c.sendMessage(acc, peer, "m$i") }
                    }
                    .first { it.messages.size == 3 }
                assertTrue(got.first().messages.isEmpty())
                assertEquals(got.map { it.version }.sorted(), got.map { it.version }.distinct())
                val last = c.conversation(conv).first { it.messages.size == 3 }
                assertEquals(listOf("m0", "m1", "m2"), last.messages.map { it.body })
                assertTrue(last.messages.all { it.state == DeliveryState.PENDING })
            }
        }
    }

    @Test
    fun errorsArriveAsExceptions() = runBlocking {
        open().use { c ->
            assertThrows(Failure.BadInput::class.java) {
                runBlocking { c.registerAccount("not a jid@@", "pass word", server) }
            }
            assertThrows(Failure.BadInput::class.java) { c.sendMessage(1L, "x@@", "hi") }
            assertThrows(Failure.NotFound::class.java) { c.markRead(424242L) }
            // A real account, the wrong password.
            val jid = fresh("kte")
            open().use { other -> other.registerAccount(jid, "right password", server) }
            val acc = c.addAccount(jid, "wrong password", server)
            val e = assertThrows(Failure.Auth::class.java) { runBlocking { c.login(acc) } }
            assertTrue(e.detail.isNotEmpty())
        }
    }

    @Test
    fun theDatabaseKeyComesFromTheKeyStore() {
        val dir = tempDir()
        val keys = MemoryKeys()
        open(keys, dir).use { it.addAccount(fresh("ktk"), "pass word", server) }
        val saved = keys.key!!
        assertEquals(64, saved.length)
        // Opened again with the saved key: the account is there.
        open(MemoryKeys(saved), dir).use { assertEquals(1, it.accounts().size) }
        // Another key: refused, and nothing is lost.
        val other = if (saved[0] == '0') "1" + saved.drop(1) else "0" + saved.drop(1)
        assertNotEquals(saved, other)
        assertThrows(Failure.WrongKey::class.java) { open(MemoryKeys(other), dir) }
        open(MemoryKeys(saved), dir).use { assertEquals(1, it.accounts().size) }
    }

    @Test
    fun closedObjectsRefuseCalls() {
        val c = open()
        c.close()
        assertThrows(IllegalStateException::class.java) { c.accounts() }
    }
}
