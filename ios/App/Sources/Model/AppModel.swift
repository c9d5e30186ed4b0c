import Foundation
import LinnetKit
import Observation

/// The process's one client, as far as it has got, and the chat list it publishes. The
/// client lives as long as the process; the screens get it from here.
@MainActor
@Observable
final class AppModel: ShowsErrors {
    enum Phase {
        case opening
        case failed(String)
        case ready(Linnet)
    }

    private(set) var phase: Phase = .opening
    /// Whether any account exists: decides between onboarding and the chat list.
    private(set) var hasAccounts = false
    /// Nil until the first snapshot, which the core delivers at once.
    private(set) var chatList: ChatList?
    var error: String?

    private var started = false
    // Set before the client opens, so that neither is lost if it comes early.
    private var foreground = true
    private var online: Bool?

    var linnet: Linnet? {
        if case .ready(let linnet) = phase { linnet } else { nil }
    }

    /// Opens the client in the directory `dataDir` makes, logs every account in, and follows
    /// the chat list for as long as the calling task runs (the app's lifetime).
    func run(dataDir: @escaping @Sendable () throws -> URL, keys: any DatabaseKeyStore) async {
        guard !started else { return }
        started = true
        let opened: (Linnet, [AccountRef])
        do {
            // Opening reads the Keychain and the database: not on the main thread.
            opened = try await Task.detached(priority: .userInitiated) {
                let linnet = try Linnet(dataDir: try dataDir().path, keys: keys)
                return (linnet, try linnet.accounts())
            }.value
        } catch {
            phase = .failed(humanMessage(error))
            return
        }
        let (linnet, accounts) = opened
        hasAccounts = !accounts.isEmpty
        phase = .ready(linnet)
        perform { try linnet.setForeground(foreground) }
        if let online { perform { try linnet.networkChanged(online: online) } }

        // The core keeps accounts, not sessions, across restarts: log each in again. A
        // failure shows in the chat list as the account's connection state.
        for account in accounts {
            Task { try? await linnet.login(account.id) }
        }

        do {
            for try await snapshot in linnet.chatList {
                chatList = snapshot
                if !snapshot.accounts.isEmpty { hasAccounts = true }
            }
        } catch {
            self.error = humanMessage(error)
        }
    }

    /// After onboarding added an account, before the chat list has shown it.
    func accountAdded() {
        hasAccounts = true
    }

    func setForeground(_ foreground: Bool) {
        self.foreground = foreground
        guard let linnet else { return }
        perform { try linnet.setForeground(foreground) }
    }

    /// Told again on every change of path, not only of reachability: after a switch from
    /// Wi-Fi to cellular the old connection is dead, and the core should retry at once.
    func networkChanged(online: Bool) {
        self.online = online
        guard let linnet else { return }
        perform { try linnet.networkChanged(online: online) }
    }

    func approve(account: Int64, jid: String) {
        guard let linnet else { return }
        launch { try await linnet.approveContact(account: account, jid: jid) }
    }

    func deny(account: Int64, jid: String) {
        guard let linnet else { return }
        launch { try await linnet.denyContact(account: account, jid: jid) }
    }
}
