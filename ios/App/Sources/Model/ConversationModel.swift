import Foundation
import LinnetKit
import Observation

/// One conversation: the core's snapshots, the draft, and the intents on them.
@MainActor
@Observable
final class ConversationModel: ShowsErrors {
    let id: Int64
    /// Nil until the first snapshot (or for good, with an error, if there is no such
    /// conversation).
    private(set) var conversation: Conversation?
    private(set) var draft = ""
    var error: String?

    private let linnet: Linnet
    private var visible = false

    init(linnet: Linnet, id: Int64) {
        self.linnet = linnet
        self.id = id
    }

    /// Follows the conversation for as long as the calling task runs (the screen's `task`).
    func run() async {
        do {
            for try await snapshot in linnet.conversation(id) {
                conversation = snapshot
                markReadIfSeen()
            }
        } catch {
            self.error = humanMessage(error)
        }
    }

    /// On screen and the app in front: what arrives now has been seen.
    func setVisible(_ visible: Bool) {
        self.visible = visible
        if visible {
            markReadIfSeen()
        } else {
            // Nobody is typing in a conversation that is not on screen.
            perform { try linnet.setTyping(id, false) }
        }
    }

    func changeDraft(_ text: String) {
        let wasTyping = !draft.isBlank
        draft = text
        // The core sends a chat state only when this changes, but crossing the FFI on every
        // keystroke is still a waste.
        if wasTyping != !text.isBlank {
            perform { try linnet.setTyping(id, !text.isBlank) }
        }
    }

    var canSend: Bool { conversation != nil && !draft.isBlank }

    func send() {
        guard let target = conversation, !draft.isBlank else { return }
        let body = draft
        draft = ""
        do {
            try linnet.sendMessage(account: target.account, to: target.peer, body: body)
            try linnet.setTyping(id, false)
        } catch {
            // Nothing typed is lost: the text comes back unless something new was typed.
            if draft.isEmpty { draft = body }
            self.error = humanMessage(error)
        }
    }

    /// Asks for older messages (when the oldest shown comes into view); they arrive in a
    /// snapshot.
    func loadOlder() {
        guard let conversation, conversation.hasMore, !conversation.loadingOlder else { return }
        perform { try linnet.loadOlder(id) }
    }

    private func markReadIfSeen() {
        guard visible, let conversation, conversation.unread > 0 else { return }
        perform { try linnet.markRead(id) }
    }
}
