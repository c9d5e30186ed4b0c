import Foundation
import LinnetKit
import Observation

/// What an account shows of itself: nil where the core has nothing yet (never logged in).
struct AccountSecurity: Identifiable, Hashable {
    let id: Int64
    let jid: String
    let fingerprint: String?
    let verificationUri: String?
}

/// Each account's own fingerprint and verification link, a contact's devices with their
/// fingerprints and trust, and verifying a contact by the link they show.
@MainActor
@Observable
final class SettingsModel: ShowsErrors {
    private(set) var accounts: [AccountSecurity] = []
    /// The account the look-up and the verification act for.
    var account: Int64? {
        didSet { if account != oldValue { loadContacts() } }
    }
    /// The chosen account's contacts, to pick whose devices to show.
    private(set) var contacts: [Contact] = []
    var peer: String
    /// The devices of the last look-up; nil before one.
    private(set) var devices: [Device]?
    private(set) var devicesOf: String?
    var verificationUri = ""
    private(set) var notice: String?
    var error: String? {
        didSet { if error != nil { notice = nil } }
    }

    private let linnet: Linnet

    /// For `account` (the first when nil), looking up `peer`'s devices at once if given.
    init(linnet: Linnet, account: Int64? = nil, peer: String? = nil) {
        self.linnet = linnet
        self.account = account
        self.peer = peer ?? ""
    }

    func load() {
        perform {
            accounts = try linnet.accounts().map { ref in
                // An account that never logged in has no OMEMO device yet.
                AccountSecurity(
                    id: ref.id, jid: ref.jid,
                    fingerprint: try? linnet.ownFingerprint(ref.id),
                    verificationUri: try? linnet.ownVerificationUri(ref.id))
            }
        }
        if account == nil || !accounts.contains(where: { $0.id == account }) {
            account = accounts.first?.id
        }
        loadContacts()
        if !peer.isBlank { lookUp() }
    }

    var canLookUp: Bool { account != nil && !peer.isBlank }

    func lookUp(_ jid: String? = nil) {
        if let jid { peer = jid }
        guard let account, !peer.isBlank else { return }
        let jid = peer.trimmed
        perform {
            devices = try linnet.omemoDevices(account: account, jid: jid)
            devicesOf = jid
        }
    }

    var canVerify: Bool { account != nil && !verificationUri.isBlank }

    func verify() {
        guard let account, canVerify else { return }
        perform {
            let count = try linnet.verifyByUri(account: account, uri: verificationUri.trimmed)
            verificationUri = ""
            notice = count == 1 ? "1 device verified." : "\(count) devices verified."
            // The devices shown may be among those just verified.
            if let devicesOf { lookUp(devicesOf) }
        }
    }

    private func loadContacts() {
        guard let account else {
            contacts = []
            return
        }
        perform { contacts = try linnet.contacts(account) }
    }
}
