import Foundation
import LinnetKit

/// What to tell the user about a failure. Only refusals and bad input carry the core's
/// detail: there it says what to change (name taken, password too short); elsewhere it is
/// for logs, not people.
func humanMessage(_ error: any Error) -> String {
    guard let error = error as? LinnetError else {
        return "Something went wrong inside Linnet. Please try again."
    }
    switch error {
    case .Network:
        return "Could not reach the server. Check the address and your connection, then try again."
    case .Auth:
        return "The address or the password is wrong."
    case .Tls:
        return "The server could not prove who it is, so Linnet did not connect."
    case .NotFound:
        return "That account or conversation no longer exists."
    case .Policy(let detail):
        return "The server refused: \(detail)"
    case .BadInput(let detail):
        return "Please check what you entered: \(detail)"
    case .WrongKey:
        return "Linnet's data on this device cannot be unlocked with this device's key."
    case .Internal:
        return "Something went wrong inside Linnet. Please try again."
    }
}

/// A screen's model that shows one failure at a time, until dismissed.
@MainActor
protocol ShowsErrors: AnyObject {
    var error: String? { get set }
}

extension ShowsErrors {
    /// Runs a synchronous intent. The core's synchronous calls only record the intent and
    /// return, so they run here, on the main actor, which also keeps them in order ("typing"
    /// cannot overtake "stopped typing").
    func perform(_ intent: () throws -> Void) {
        do {
            try intent()
        } catch {
            self.error = humanMessage(error)
        }
    }

    /// Runs an asynchronous intent (log-in, contacts); its effect shows in the next snapshot.
    func launch(_ intent: @escaping @MainActor () async throws -> Void) {
        Task {
            do {
                try await intent()
            } catch {
                self.error = humanMessage(error)
            }
        }
    }
}
