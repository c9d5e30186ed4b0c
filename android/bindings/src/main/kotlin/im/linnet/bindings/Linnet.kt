// The only code that imports the generated bindings (im.linnet.ffi): it turns the core's
// subscriptions into Flows and owns the native objects' lifetimes. Platform-independent:
// the same source is built for Android (Gradle) and for the JVM (Maven, tests).
package im.linnet.bindings

import im.linnet.ffi.ChatListObserver
import im.linnet.ffi.ClientConfig
import im.linnet.ffi.ConversationObserver
import im.linnet.ffi.KeyStorage
import im.linnet.ffi.LinnetClient
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow

typealias Account = im.linnet.ffi.Account
typealias AccountRef = im.linnet.ffi.AccountRef
typealias ChatItem = im.linnet.ffi.ChatItem
typealias ChatList = im.linnet.ffi.ChatList
typealias Connection = im.linnet.ffi.Connection
typealias Contact = im.linnet.ffi.Contact
typealias Conversation = im.linnet.ffi.Conversation
typealias DeliveryState = im.linnet.ffi.DeliveryState
typealias Device = im.linnet.ffi.Device
typealias DeviceTrust = im.linnet.ffi.DeviceTrust
typealias Direction = im.linnet.ffi.Direction
typealias Encryption = im.linnet.ffi.Encryption
typealias LinnetException = im.linnet.ffi.LinnetException
typealias Message = im.linnet.ffi.Message
typealias Server = im.linnet.ffi.Server
typealias Preview = im.linnet.ffi.Preview
typealias Group = im.linnet.ffi.Group
typealias JoinState = im.linnet.ffi.JoinState
typealias Invitation = im.linnet.ffi.Invitation
typealias FileInfo = im.linnet.ffi.FileInfo
typealias TransferState = im.linnet.ffi.TransferState
typealias Reply = im.linnet.ffi.Reply
typealias Reaction = im.linnet.ffi.Reaction
typealias StyleSpan = im.linnet.ffi.StyleSpan
typealias TextStyle = im.linnet.ffi.TextStyle
typealias Call = im.linnet.ffi.Call
typealias CallState = im.linnet.ffi.CallState
typealias CallEnd = im.linnet.ffi.CallEnd
typealias CallDirection = im.linnet.ffi.CallDirection
typealias CallDevices = im.linnet.ffi.CallDevices
typealias Microphone = im.linnet.ffi.Microphone
typealias Speaker = im.linnet.ffi.Speaker
typealias Camera = im.linnet.ffi.Camera
typealias VideoRenderer = im.linnet.ffi.VideoRenderer
typealias VideoFrame = im.linnet.ffi.VideoFrame

// Kotlin resolves no nested class through a typealias (`Connection.Online` is not found
// through the alias above), so the variants the app tells apart have aliases of their own.
typealias ConnectionOffline = im.linnet.ffi.Connection.Offline
typealias ConnectionConnecting = im.linnet.ffi.Connection.Connecting
typealias ConnectionOnline = im.linnet.ffi.Connection.Online
typealias ConnectionWaiting = im.linnet.ffi.Connection.Waiting
typealias CallRinging = im.linnet.ffi.CallState.Ringing
typealias CallConnecting = im.linnet.ffi.CallState.Connecting
typealias CallConnected = im.linnet.ffi.CallState.Connected
typealias CallEnded = im.linnet.ffi.CallState.Ended
typealias CallHungUp = im.linnet.ffi.CallEnd.HungUp
typealias CallDeclined = im.linnet.ffi.CallEnd.Declined
typealias CallCancelled = im.linnet.ffi.CallEnd.Cancelled
typealias CallFailed = im.linnet.ffi.CallEnd.Failed
typealias NetworkException = im.linnet.ffi.LinnetException.Network
typealias AuthException = im.linnet.ffi.LinnetException.Auth
typealias TlsException = im.linnet.ffi.LinnetException.Tls
typealias NotFoundException = im.linnet.ffi.LinnetException.NotFound
typealias PolicyException = im.linnet.ffi.LinnetException.Policy
typealias BadInputException = im.linnet.ffi.LinnetException.BadInput
typealias WrongKeyException = im.linnet.ffi.LinnetException.WrongKey
typealias InternalException = im.linnet.ffi.LinnetException.Internal

/** Where the platform keeps the database key (Android Keystore, iOS Keychain). */
interface DatabaseKeyStore {
    /** The key saved before (64 hex digits), or null on the first start. */
    fun load(): String?

    fun save(keyHex: String)
}

/**
 * The Linnet client: one per process. Close it when the process is done with it (its
 * native memory is freed then, not by the garbage collector).
 */
class Linnet private constructor(private val client: LinnetClient) : AutoCloseable {
    companion object {
        /** Opens (or creates) the encrypted database in [dataDir]; throws [LinnetException]. */
        fun open(
            dataDir: String,
            keys: DatabaseKeyStore,
            extraCaPem: String? = null,
            onlyExtraCa: Boolean = false,
            relayCalls: Boolean = false,
        ): Linnet {
            val storage = object : KeyStorage {
                override fun loadDatabaseKey(): String? = keys.load()

                override fun saveDatabaseKey(keyHex: String) = keys.save(keyHex)
            }
            return Linnet(LinnetClient.open(dataDir, storage, ClientConfig(extraCaPem, onlyExtraCa, relayCalls)))
        }
    }

    /**
     * The chat list: the current snapshot first, then each newer one, in order. A slow
     * collector gets the newest (snapshots are whole states, not changes). Collecting
     * subscribes; cancelling the collection unsubscribes.
     */
    val chatList: Flow<ChatList>
        get() = callbackFlow {
            val handle = client.subscribeChatList(object : ChatListObserver {
                override fun onUpdate(snapshot: ChatList) {
                    trySend(snapshot)
                }
            })
            awaitClose { handle.use { it.cancel() } }
        }.buffer(Channel.CONFLATED)

    /** One conversation's snapshots, as [chatList]. */
    fun conversation(id: Long): Flow<Conversation> = callbackFlow {
        val handle = client.subscribeConversation(id, object : ConversationObserver {
            override fun onUpdate(snapshot: Conversation) {
                trySend(snapshot)
            }
        })
        awaitClose { handle.use { it.cancel() } }
    }.buffer(Channel.CONFLATED)

    suspend fun registerAccount(jid: String, password: String, server: Server? = null): Long =
        client.registerAccount(jid, password, server)

    fun addAccount(jid: String, password: String, server: Server? = null): Long =
        client.addAccount(jid, password, server)

    fun accounts(): List<AccountRef> = client.accounts()

    suspend fun login(account: Long) = client.login(account)

    suspend fun logout(account: Long) = client.logout(account)

    fun setForeground(foreground: Boolean) = client.setForeground(foreground)

    fun networkChanged(online: Boolean) = client.networkChanged(online)

    fun sendMessage(account: Long, to: String, body: String): Long = client.sendMessage(account, to, body)

    fun openConversation(account: Long, peer: String): Long = client.openConversation(account, peer)

    fun markRead(conversation: Long) = client.markRead(conversation)

    fun setTyping(conversation: Long, typing: Boolean) = client.setTyping(conversation, typing)

    fun loadOlder(conversation: Long) = client.loadOlder(conversation)

    suspend fun addContact(account: Long, jid: String, name: String? = null) =
        client.addContact(account, jid, name)

    suspend fun approveContact(account: Long, jid: String) = client.approveContact(account, jid)

    suspend fun denyContact(account: Long, jid: String) = client.denyContact(account, jid)

    fun contacts(account: Long): List<Contact> = client.contacts(account)

    fun ownFingerprint(account: Long): String = client.ownFingerprint(account)

    fun ownVerificationUri(account: Long): String = client.ownVerificationUri(account)

    fun verifyByUri(account: Long, uri: String): UInt = client.verifyByUri(account, uri)

    fun omemoDevices(account: Long, jid: String): List<Device> = client.omemoDevices(account, jid)

    fun currentChatList(): ChatList = client.chatList()

    fun messages(conversation: Long, before: Long? = null, limit: UInt = 50u): List<Message> =
        client.messages(conversation, before, limit)

    /** Logs every account out. */
    /** Calls [peer] on every device of theirs; the call shows in [chatList]'s `calls`. */
    suspend fun startCall(account: Long, peer: String, video: Boolean, devices: CallDevices): ULong =
        client.startCall(account, peer, video, devices)

    /** Takes an incoming call here; the user's other devices stop ringing. */
    fun acceptCall(call: ULong, devices: CallDevices) = client.acceptCall(call, devices)

    fun rejectCall(call: ULong) = client.rejectCall(call)

    /** Hangs up, or cancels a call that still rings. */
    fun endCall(call: ULong) = client.endCall(call)

    fun setCallMuted(call: ULong, audio: Boolean, muted: Boolean) = client.setCallMuted(call, audio, muted)

    fun addCallVideo(call: ULong, devices: CallDevices) = client.addCallVideo(call, devices)

    suspend fun shutdown() = client.shutdown()

    override fun close() = client.close()

    /** The generated object itself, for the FFI benchmark (scripts/bench-ffi) only. */
    internal fun rawClient(): LinnetClient = client
}
