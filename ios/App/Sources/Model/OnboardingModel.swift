import Foundation
import LinnetKit
import Observation

/// Creating an account on a server of the user's choice by in-band registration (a user
/// name and a password: no phone number, no e-mail), or logging in to one they have.
@MainActor
@Observable
final class OnboardingModel: ShowsErrors {
    enum Mode: Hashable { case register, logIn }

    var mode: Mode = .register {
        didSet { error = nil }
    }
    var username = ""
    var domain = ""
    var jid = ""
    var password = ""
    var passwordAgain = ""
    private(set) var busy = false
    /// Set once the account exists and its first log-in was tried.
    private(set) var done = false
    var error: String?

    private let linnet: Linnet
    // An account added by a log-in attempt whose first connection failed: trying again with
    // the same address and password logs it in rather than adding it twice.
    private var added: (jid: String, password: String, id: Int64)?

    init(linnet: Linnet) {
        self.linnet = linnet
    }

    var newAddress: String? {
        username.isBlank || domain.isBlank ? nil : "\(username.trimmed)@\(domain.trimmed)"
    }

    var passwordsDiffer: Bool {
        mode == .register && !passwordAgain.isEmpty && password != passwordAgain
    }

    var canSubmit: Bool {
        guard !busy, !password.isEmpty else { return false }
        switch mode {
        case .register: return newAddress != nil && password == passwordAgain
        case .logIn: return !jid.isBlank
        }
    }

    func submit() {
        guard canSubmit else { return }
        busy = true
        error = nil
        let (mode, password) = (self.mode, self.password)
        let jid = mode == .register ? newAddress ?? "" : self.jid.trimmed
        Task {
            defer { busy = false }
            do {
                switch mode {
                case .register:
                    let account = try await linnet.registerAccount(jid: jid, password: password)
                    // The account exists now; after a network failure the core keeps trying,
                    // and the chat list shows how that goes.
                    do {
                        try await linnet.login(account)
                    } catch LinnetError.Network {}
                case .logIn:
                    let account: Int64
                    if let added, added.jid == jid, added.password == password {
                        account = added.id
                    } else {
                        account = try linnet.addAccount(jid: jid, password: password)
                        added = (jid, password, account)
                    }
                    try await linnet.login(account)
                }
                done = true
            } catch {
                self.error = humanMessage(error)
            }
        }
    }
}
