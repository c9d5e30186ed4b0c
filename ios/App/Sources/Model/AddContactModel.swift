import Foundation
import LinnetKit
import Observation

/// Adding a contact (a subscription request to them) to one of the accounts.
@MainActor
@Observable
final class AddContactModel: ShowsErrors {
    private(set) var accounts: [AccountRef] = []
    /// The account the contact is added to.
    var account: Int64?
    var jid = ""
    var name = ""
    private(set) var busy = false
    /// The new contact's conversation, once added: the screen opens it.
    private(set) var conversation: Int64?
    var error: String?

    private let linnet: Linnet

    init(linnet: Linnet) {
        self.linnet = linnet
    }

    func load() {
        perform {
            accounts = try linnet.accounts()
            if account == nil || !accounts.contains(where: { $0.id == account }) {
                account = accounts.first?.id
            }
        }
    }

    var canAdd: Bool { !busy && account != nil && !jid.isBlank }

    func add() {
        guard canAdd, let account else { return }
        busy = true
        error = nil
        let jid = jid.trimmed
        let name = name.trimmed
        Task {
            defer { busy = false }
            do {
                try await linnet.addContact(account: account, jid: jid, name: name.isEmpty ? nil : name)
                conversation = try linnet.openConversation(account: account, peer: jid)
            } catch {
                self.error = humanMessage(error)
            }
        }
    }
}
