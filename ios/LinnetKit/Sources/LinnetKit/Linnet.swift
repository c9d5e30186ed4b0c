// The only code that imports the generated bindings (LinnetFFI): it turns the core's
// subscriptions into AsyncStreams and owns the native objects. The records (ChatList,
// Conversation, Message…) and LinnetError are re-exported as they are.
import Foundation
@_exported import LinnetFFI

/// Where the platform keeps the database key (the Keychain on iOS).
public protocol DatabaseKeyStore: AnyObject, Sendable {
    /// The key saved before (64 hex digits), or nil on the first start.
    func load() throws -> String?
    func save(_ keyHex: String) throws
}

private final class KeyBridge: KeyStorage, @unchecked Sendable {
    let store: DatabaseKeyStore
    init(_ store: DatabaseKeyStore) { self.store = store }
    func loadDatabaseKey() throws -> String? { try store.load() }
    func saveDatabaseKey(keyHex: String) throws { try store.save(keyHex) }
}

private final class ChatListBridge: ChatListObserver, @unchecked Sendable {
    let yield: (ChatList) -> Void
    init(_ yield: @escaping (ChatList) -> Void) { self.yield = yield }
    func onUpdate(snapshot: ChatList) { yield(snapshot) }
}

private final class ConversationBridge: ConversationObserver, @unchecked Sendable {
    let yield: (Conversation) -> Void
    init(_ yield: @escaping (Conversation) -> Void) { self.yield = yield }
    func onUpdate(snapshot: Conversation) { yield(snapshot) }
}

/// The Linnet client: one per process. Its native memory is freed with the last reference.
public final class Linnet: Sendable {
    private let client: LinnetClient

    /// Opens (or creates) the encrypted database in `dataDir`; throws `LinnetError`.
    public init(
        dataDir: String, keys: DatabaseKeyStore, extraCaPem: String? = nil,
        onlyExtraCa: Bool = false
    ) throws {
        client = try LinnetClient.open(
            dataDir: dataDir, keys: KeyBridge(keys),
            config: ClientConfig(extraCaPem: extraCaPem, onlyExtraCa: onlyExtraCa))
    }

    /// The chat list: the current snapshot first, then each newer one, in order. A slow
    /// reader gets the newest (snapshots are whole states). Ending the iteration (or
    /// dropping the stream) unsubscribes.
    public var chatList: AsyncThrowingStream<ChatList, Error> {
        subscription { yield in
            try self.client.subscribeChatList(observer: ChatListBridge(yield))
        }
    }

    /// One conversation's snapshots, as `chatList`.
    public func conversation(_ id: Int64) -> AsyncThrowingStream<Conversation, Error> {
        subscription { yield in
            try self.client.subscribeConversation(
                conversation: id, observer: ConversationBridge(yield))
        }
    }

    private func subscription<T>(
        _ subscribe: @escaping (@escaping (T) -> Void) throws -> SubscriptionHandle
    ) -> AsyncThrowingStream<T, Error> {
        AsyncThrowingStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            do {
                let handle = try subscribe { continuation.yield($0) }
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    public func registerAccount(jid: String, password: String, server: Server? = nil)
        async throws -> Int64
    {
        try await client.registerAccount(jid: jid, password: password, server: server)
    }

    public func addAccount(jid: String, password: String, server: Server? = nil) throws -> Int64 {
        try client.addAccount(jid: jid, password: password, server: server)
    }

    public func accounts() throws -> [AccountRef] { try client.accounts() }
    public func login(_ account: Int64) async throws { try await client.login(account: account) }
    public func logout(_ account: Int64) async throws { try await client.logout(account: account) }
    public func setForeground(_ foreground: Bool) throws {
        try client.setForeground(foreground: foreground)
    }
    public func networkChanged(online: Bool) throws { try client.networkChanged(online: online) }

    @discardableResult
    public func sendMessage(account: Int64, to: String, body: String) throws -> Int64 {
        try client.sendMessage(account: account, to: to, body: body)
    }

    public func openConversation(account: Int64, peer: String) throws -> Int64 {
        try client.openConversation(account: account, peer: peer)
    }

    public func markRead(_ conversation: Int64) throws { try client.markRead(conversation: conversation) }
    public func setTyping(_ conversation: Int64, _ typing: Bool) throws {
        try client.setTyping(conversation: conversation, typing: typing)
    }
    public func loadOlder(_ conversation: Int64) throws { try client.loadOlder(conversation: conversation) }

    public func addContact(account: Int64, jid: String, name: String? = nil) async throws {
        try await client.addContact(account: account, jid: jid, name: name)
    }
    public func approveContact(account: Int64, jid: String) async throws {
        try await client.approveContact(account: account, jid: jid)
    }
    public func denyContact(account: Int64, jid: String) async throws {
        try await client.denyContact(account: account, jid: jid)
    }
    public func contacts(_ account: Int64) throws -> [Contact] { try client.contacts(account: account) }

    public func ownFingerprint(_ account: Int64) throws -> String {
        try client.ownFingerprint(account: account)
    }
    public func ownVerificationUri(_ account: Int64) throws -> String {
        try client.ownVerificationUri(account: account)
    }
    public func verifyByUri(account: Int64, uri: String) throws -> UInt32 {
        try client.verifyByUri(account: account, uri: uri)
    }
    public func omemoDevices(account: Int64, jid: String) throws -> [Device] {
        try client.omemoDevices(account: account, jid: jid)
    }

    public func currentChatList() -> ChatList { client.chatList() }

    public func messages(_ conversation: Int64, before: Int64? = nil, limit: UInt32 = 50) throws
        -> [Message]
    {
        try client.messages(conversation: conversation, before: before, limit: limit)
    }

    /// Logs every account out.
    public func shutdown() async throws { try await client.shutdown() }
}
