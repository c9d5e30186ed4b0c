// LinnetKit against the host library and the local Prosody (scripts/test-swift): the same
// cases as the Kotlin bindings' tests.
import Foundation
import LinnetKit
import XCTest

private func env(_ name: String) -> String {
    guard let v = ProcessInfo.processInfo.environment[name] else {
        fatalError("\(name) is not set: run through scripts/test-swift")
    }
    return v
}

final class MemoryKeys: DatabaseKeyStore, @unchecked Sendable {
    var key: String?
    init(_ key: String? = nil) { self.key = key }
    func load() throws -> String? { key }
    func save(_ keyHex: String) throws { key = keyHex }
}

/// The first element of `stream` that satisfies `pred`.
private func first<T>(
    _ stream: AsyncThrowingStream<T, Error>, where pred: (T) throws -> Bool
) async throws -> T {
    for try await x in stream where try pred(x) { return x }
    throw XCTSkip("the stream ended")
}

final class LinnetKitTests: XCTestCase {
    let domain = env("PROSODY_DOMAIN")
    lazy var server = Server(host: env("PROSODY_HOST"), port: UInt16(env("PROSODY_PORT"))!, directTls: false)
    lazy var ca = try! String(contentsOfFile: env("LINNET_CA"), encoding: .utf8)

    func fresh(_ tag: String) -> String {
        tag + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased() + "@" + domain
    }

    func tempDir() -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }

    func open(_ keys: MemoryKeys = MemoryKeys(), dir: String? = nil) throws -> Linnet {
        try Linnet(dataDir: dir ?? tempDir(), keys: keys, extraCaPem: ca, onlyExtraCa: true)
    }

    func testRegisterLogInSendAndReceive() async throws {
        let a = try open()
        let b = try open()
        let (ja, jb) = (fresh("swa"), fresh("swb"))
        let accA = try await a.registerAccount(jid: ja, password: "pass word", server: server)
        let accB = try await b.registerAccount(jid: jb, password: "pass word", server: server)
        try await a.login(accA)
        try await b.login(accB)
        XCTAssertEqual(try a.accounts(), [AccountRef(id: accA, jid: ja)])
        let now = try await first(a.chatList) { _ in true }
        XCTAssertEqual(now.accounts.first?.connection, .online)

        try await a.addContact(account: accA, jid: jb, name: "B")
        _ = try await first(b.chatList) { $0.accounts.contains { $0.subscriptionRequests.contains(ja) } }
        try await b.approveContact(account: accB, jid: ja)
        _ = try await first(a.chatList) { _ in
            try a.contacts(accA).contains { $0.jid == jb && $0.subscription == "both" }
        }

        try a.sendMessage(account: accA, to: jb, body: "hello from swift ü")
        var versions: [UInt64] = []
        _ = try await first(b.chatList) { s in
            versions.append(s.version)
            return s.conversations.contains { $0.lastMessage?.body == "hello from swift ü" }
        }
        XCTAssertEqual(versions, versions.sorted(), "snapshots in order")

        let conversation = try b.openConversation(account: accB, peer: ja)
        let snap = try await first(b.conversation(conversation)) { s in
            s.messages.contains { $0.body == "hello from swift ü" }
        }
        let m = snap.messages.first { $0.body == "hello from swift ü" }!
        XCTAssertEqual(m.direction, .incoming)
        XCTAssertEqual(m.encryption, .omemo2, "end-to-end encrypted")
        XCTAssertEqual(m.trust, .blind)
        XCTAssertEqual(try a.ownFingerprint(accA).count, 64)
        XCTAssertTrue(try a.omemoDevices(account: accA, jid: jb).contains {
            $0.fingerprint == (try? b.ownFingerprint(accB))
        })
        try await a.shutdown()
        try await b.shutdown()
    }

    func testAStreamStartsWithTheCurrentSnapshotAndKeepsOrder() async throws {
        let c = try open()
        let acc = try c.addAccount(jid: fresh("swf"), password: "pass word", server: server)
        let peer = fresh("swg")
        let conversation = try c.openConversation(account: acc, peer: peer)
        var got: [Conversation] = []
        _ = try await first(c.conversation(conversation)) { s in
            got.append(s)
            if got.count == 1 {
                for i in 0..<3 { try c.sendMessage(account: acc, to: peer, body: "m\(i)") }
            }
            return s.messages.count == 3
        }
        XCTAssertTrue(got[0].messages.isEmpty)
        XCTAssertEqual(got.map(\.version), got.map(\.version).sorted())
        XCTAssertEqual(got.last!.messages.map(\.body), ["m0", "m1", "m2"])
        XCTAssertTrue(got.last!.messages.allSatisfy { $0.state == .pending })
    }

    func testErrorsArriveAsSwiftErrors() async throws {
        let c = try open()
        do {
            _ = try await c.registerAccount(jid: "not a jid@@", password: "pass word", server: server)
            XCTFail("accepted a bad JID")
        } catch LinnetError.BadInput {}
        XCTAssertThrowsError(try c.markRead(424242)) { e in
            guard case LinnetError.NotFound = e else { return XCTFail("\(e)") }
        }
        do {
            for try await _ in c.conversation(424242) {}
            XCTFail("subscribed to nothing")
        } catch LinnetError.NotFound {}
        let jid = fresh("swe")
        _ = try await open().registerAccount(jid: jid, password: "right password", server: server)
        let acc = try c.addAccount(jid: jid, password: "wrong password", server: server)
        do {
            try await c.login(acc)
            XCTFail("logged in with the wrong password")
        } catch LinnetError.Auth(let detail) {
            XCTAssertFalse(detail.isEmpty)
        }
    }

    func testTheDatabaseKeyComesFromTheKeyStore() throws {
        let dir = tempDir()
        let keys = MemoryKeys()
        _ = try open(keys, dir: dir).addAccount(jid: fresh("swk"), password: "pass word", server: server)
        let saved = try XCTUnwrap(keys.key)
        XCTAssertEqual(saved.count, 64)
        XCTAssertEqual(try open(MemoryKeys(saved), dir: dir).accounts().count, 1)
        let other = (saved.first == "0" ? "1" : "0") + saved.dropFirst()
        XCTAssertThrowsError(try open(MemoryKeys(other), dir: dir)) { e in
            XCTAssertEqual(e as? LinnetError, .WrongKey)
        }
        XCTAssertEqual(try open(MemoryKeys(saved), dir: dir).accounts().count, 1)
    }
}
