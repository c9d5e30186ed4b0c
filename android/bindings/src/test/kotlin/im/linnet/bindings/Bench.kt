// scripts/bench-ffi: what it costs to bring a 1,000-conversation chat list from the core to
// Kotlin through the FFI (lowering in Rust, lifting in Kotlin over JNA). Figures, not a test.
package im.linnet.bindings

import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking

private fun median(xs: List<Long>): Double = xs.sorted().let { s ->
    if (s.size % 2 == 1) s[s.size / 2].toDouble() else (s[s.size / 2 - 1] + s[s.size / 2]) / 2.0
}

fun main(args: Array<String>) {
    val conversations = args.getOrNull(0)?.toInt() ?: 1000
    val runs = args.getOrNull(1)?.toInt() ?: 50
    val keys = object : DatabaseKeyStore {
        var key: String? = null

        override fun load() = key

        override fun save(keyHex: String) {
            key = keyHex
        }
    }
    Linnet.open(Files.createTempDirectory("linnet-bench").toString(), keys).use { c ->
        // Offline: each message waits in the outbox, and its conversation is in the list.
        val acc = c.addAccount("bench@bench.invalid", "pass word")
        for (i in 0 until conversations) c.sendMessage(acc, "peer$i@bench.invalid", "message $i")
        runBlocking { c.chatList.first { it.conversations.size == conversations } }

        repeat(10) { c.currentChatList() }
        val call = (1..runs).map {
            val t = System.nanoTime()
            val s = c.currentChatList()
            check(s.conversations.size == conversations)
            System.nanoTime() - t
        }
        // Subscribing: the current snapshot is delivered to the observer at once.
        val delivered = (1..runs).map {
            val latch = CountDownLatch(1)
            val t = System.nanoTime()
            var took = 0L
            val h = c.rawClient().subscribeChatList(object : im.linnet.ffi.ChatListObserver {
                override fun onUpdate(snapshot: ChatList) {
                    if (took == 0L) took = System.nanoTime() - t
                    latch.countDown()
                }
            })
            latch.await(10, TimeUnit.SECONDS)
            h.use { it.cancel() }
            took
        }
        println(
            "chat list of $conversations conversations to Kotlin: call %.2f ms, subscription's first snapshot %.2f ms (medians of %d)".format(
                median(call) / 1e6, median(delivered) / 1e6, runs,
            ),
        )
    }
}
