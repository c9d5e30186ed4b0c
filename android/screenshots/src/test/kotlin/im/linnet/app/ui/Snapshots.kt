package im.linnet.app.ui

import im.linnet.bindings.Account
import im.linnet.bindings.AccountRef
import im.linnet.bindings.ChatItem
import im.linnet.bindings.ChatList
import im.linnet.bindings.ConnectionConnecting
import im.linnet.bindings.ConnectionOnline
import im.linnet.bindings.Conversation
import im.linnet.bindings.DeliveryState
import im.linnet.bindings.Device
import im.linnet.bindings.DeviceTrust
import im.linnet.bindings.Direction
import im.linnet.bindings.Encryption
import im.linnet.bindings.FileInfo
import im.linnet.bindings.Message
import im.linnet.bindings.Preview
import im.linnet.bindings.Reaction
import im.linnet.bindings.Reply
import im.linnet.bindings.StyleSpan
import im.linnet.bindings.TextStyle
import im.linnet.bindings.TransferState
import java.time.Instant

/**
 * Fixed snapshots as the core would publish them, one per screen: the same every run, so
 * the pictures change only when the screens do.
 */
object Snapshots {
    /** Friday 14 March 2025, 16:20 UTC (the tests run with user.timezone=UTC). */
    val NOW: Long = Instant.parse("2025-03-14T16:20:00Z").toEpochMilli()
    private const val MINUTE = 60_000L
    private const val DAY = 24 * 60 * MINUTE

    const val ME = "alice@linnet.im"
    private const val ALICE_FINGERPRINT = "3b9f0c2ad4e1775b60c8e2f1a94d0b7e5c3318fa26b7d90e4f1a8c62d5e07b39"

    private fun preview(id: Long, body: String, direction: Direction, state: DeliveryState, minutesAgo: Long, file: String? = null) =
        Preview(id, body, file, direction, state, NOW - minutesAgo * MINUTE)

    private fun chat(
        id: Long,
        peer: String,
        name: String?,
        last: Preview,
        unread: UInt = 0u,
        group: Boolean = false,
    ) = ChatItem(id, 1, peer, name, null, last, unread, last.timestampMs, group)

    val chatList = ChatList(
        version = 42u,
        accounts = listOf(
            Account(
                id = 1,
                jid = ME,
                connection = ConnectionConnecting,
                catchingUp = false,
                subscriptionRequests = listOf("grandma@jabber.de"),
                invitations = emptyList(),
                nick = "Alice",
                avatar = null,
            ),
        ),
        conversations = listOf(
            chat(1, "family@rooms.linnet.im", "Family", preview(101, "Dad: Dinner at seven on Sunday?", Direction.INCOMING, DeliveryState.DELIVERED, 15), unread = 3u, group = true),
            chat(2, "bob@jabber.org", "Bob Martin", preview(201, "On my way", Direction.OUTGOING, DeliveryState.PENDING, 2)),
            chat(3, "carol@disroot.org", "Carol", preview(301, "https://share.disroot.org/…", Direction.INCOMING, DeliveryState.DELIVERED, 58, file = "holiday-2024.jpg"), unread = 1u),
            chat(4, "dave@linnet.im", null, preview(401, "Thanks, that worked!", Direction.OUTGOING, DeliveryState.READ, 20 * 60)),
            chat(5, "hiking@rooms.linnet.im", "Hiking club", preview(501, "Erin: Photos from the Brocken are up", Direction.INCOMING, DeliveryState.DELIVERED, 3 * 24 * 60), unread = 12u, group = true),
            chat(6, "erin@jabber.de", "Erin Schmidt", preview(601, "Happy new year!", Direction.INCOMING, DeliveryState.DELIVERED, 103 * 24 * 60)),
        ),
    )

    private fun message(
        id: Long,
        direction: Direction,
        body: String,
        minutesAgo: Long,
        state: DeliveryState = DeliveryState.DELIVERED,
        spans: List<StyleSpan> = emptyList(),
        error: String? = null,
        replyTo: Reply? = null,
        reactions: List<Reaction> = emptyList(),
        file: FileInfo? = null,
        edited: Boolean = false,
    ) = Message(
        id = id,
        direction = direction,
        sender = if (direction == Direction.OUTGOING) ME else "bob@jabber.org",
        senderNick = null,
        privateWith = null,
        body = body,
        timestampMs = NOW - minutesAgo * MINUTE,
        state = state,
        encryption = Encryption.OMEMO2,
        error = error,
        edited = edited,
        retracted = false,
        replyTo = replyTo,
        reactions = reactions,
        spans = spans,
        file = file,
        trust = if (direction == Direction.INCOMING) DeviceTrust.VERIFIED else null,
    )

    private val bobDevices = listOf(
        Device(
            deviceId = 1_804_273_114u,
            encryption = Encryption.OMEMO2,
            active = true,
            fingerprint = "a41c7e0f93d25b68c1f0e7a2d4b95c3860f1e2d7a9c4b5e3f60718293a4b5c6d",
            trust = DeviceTrust.VERIFIED,
            current = false,
            label = "Pixel 8",
            stale = false,
        ),
        Device(
            deviceId = 92_615_377u,
            encryption = Encryption.OMEMO03,
            active = true,
            fingerprint = "05e2b1d9c4a7f3086e5d2c1b0a9f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6",
            trust = DeviceTrust.BLIND,
            current = false,
            label = "Conversations",
            stale = false,
        ),
    )

    val conversation = Conversation(
        version = 7u,
        id = 2,
        account = 1,
        peer = "bob@jabber.org",
        name = "Bob Martin",
        avatar = null,
        unread = 0u,
        messages = listOf(
            message(1, Direction.INCOMING, "Hi Alice! Are we still on for the hike tomorrow?", 2 * DAY / MINUTE),
            message(
                2, Direction.OUTGOING, "Yes! Meet at the station at 9:30", 45,
                state = DeliveryState.READ,
                spans = listOf(StyleSpan(TextStyle.STRONG, 28u, 32u, 0u)),
            ),
            message(
                3, Direction.INCOMING, "Perfect. Should I bring the map?", 40,
                replyTo = Reply(2, "Alice", "Yes! Meet at the station at 9:30"),
                reactions = listOf(Reaction("❤", 2u, true)),
            ),
            message(
                4, Direction.OUTGOING, "Here is the route", 30,
                state = DeliveryState.DELIVERED,
                file = FileInfo("harz-route.gpx", 48_213u, "application/gpx+xml", null, null, TransferState.UPLOADED, 48_213u, null, null, true),
            ),
            message(5, Direction.OUTGOING, "I booked the tickets, it was cheaper online", 12, state = DeliveryState.DELIVERED, edited = true),
            message(6, Direction.OUTGOING, "Can you check the weather?", 8, state = DeliveryState.SENT),
            message(
                7, Direction.OUTGOING, "And bring a rain jacket", 5,
                state = DeliveryState.FAILED,
                error = "Bob's server did not answer",
            ),
            message(8, Direction.OUTGOING, "On my way", 2, state = DeliveryState.PENDING),
        ),
        hasMore = false,
        loadingOlder = false,
        peerTyping = true,
        group = null,
        devices = bobDevices,
    )

    val onboarding = OnboardingState(
        mode = OnboardingMode.REGISTER,
        username = "alice",
        domain = "linnet.im",
        password = "correct horse battery",
        passwordAgain = "correct horse battery",
    )

    val addContact = AddContactState(
        accounts = listOf(AccountRef(1, ME), AccountRef(2, "alice@work.example")),
        account = 1,
        jid = "grandma@jabber.de",
        name = "Grandma",
    )

    val settings = SettingsState(
        accounts = listOf(
            AccountSecurity(
                id = 1,
                jid = ME,
                fingerprint = ALICE_FINGERPRINT,
                verificationUri = "xmpp:$ME?omemo2-sid-2718281828=$ALICE_FINGERPRINT",
            ),
        ),
        account = 1,
        peer = "bob@jabber.org",
        devices = bobDevices,
        devicesOf = "bob@jabber.org",
    )
}
