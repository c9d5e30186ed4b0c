import LinnetKit
import SwiftUI

/// One conversation: its messages (newest at the bottom), the peer's typing, and the
/// composer.
struct ConversationView: View {
    @State private var model: ConversationModel
    @Environment(\.scenePhase) private var scenePhase
    private let onDevices: (_ account: Int64, _ peer: String) -> Void

    init(linnet: Linnet, id: Int64, onDevices: @escaping (_ account: Int64, _ peer: String) -> Void) {
        _model = State(initialValue: ConversationModel(linnet: linnet, id: id))
        self.onDevices = onDevices
    }

    var body: some View {
        @Bindable var model = model
        let conversation = model.conversation
        VStack(spacing: 0) {
            if model.error != nil {
                ErrorBanner(error: $model.error).padding(8)
            }
            if let removed = conversation?.group?.removed {
                Text("You are no longer in this group: \(removed)")
                    .font(.callout)
                    .foregroundStyle(.red)
                    .padding(8)
            }
            if let conversation {
                MessageList(conversation: conversation, onLoadOlder: model.loadOlder)
            } else {
                Spacer()
            }
            Composer(
                draft: Binding(get: { model.draft }, set: { model.changeDraft($0) }),
                canSend: model.canSend,
                onSend: model.send)
        }
        .navigationBarTitleDisplayMode(.inline)
        .toolbar {
            ToolbarItem(placement: .principal) {
                VStack(spacing: 0) {
                    Text(conversation.map { $0.name ?? $0.peer } ?? "")
                        .font(.headline)
                        .lineLimit(1)
                    if let subtitle = subtitle(conversation) {
                        Text(subtitle).font(.caption).foregroundStyle(.secondary).lineLimit(1)
                    }
                }
            }
            if let conversation, conversation.group == nil {
                ToolbarItem(placement: .topBarTrailing) {
                    Button {
                        onDevices(conversation.account, conversation.peer)
                    } label: {
                        Image(systemName: "checkmark.shield")
                    }
                    .accessibilityLabel("Encryption keys")
                }
            }
        }
        .task { await model.run() }
        .onAppear { model.setVisible(scenePhase == .active) }
        .onDisappear { model.setVisible(false) }
        .onChange(of: scenePhase) { _, phase in model.setVisible(phase == .active) }
    }

    private func subtitle(_ conversation: Conversation?) -> String? {
        guard let conversation else { return nil }
        if conversation.peerTyping { return "typing…" }
        guard let group = conversation.group else { return nil }
        switch group.joined {
        case .joined: return group.subject ?? "\(group.occupants) in the group"
        case .joining: return "Joining…"
        case .notJoined: return "Not joined"
        }
    }
}

private struct MessageList: View {
    let conversation: Conversation
    let onLoadOlder: () -> Void
    /// Whether the newest message is on screen: only then do new ones scroll into view.
    @State private var atBottom = true

    var body: some View {
        let messages = conversation.messages
        let newest = messages.last?.id
        ScrollViewReader { proxy in
            ScrollView {
                LazyVStack(spacing: 4) {
                    if conversation.hasMore || conversation.loadingOlder {
                        // Coming into view is the reader scrolling up past the oldest loaded.
                        ProgressView()
                            .padding(8)
                            .onAppear(perform: onLoadOlder)
                    }
                    ForEach(messages, id: \.id) { message in
                        MessageBubble(message: message, inGroup: conversation.group != nil)
                            .id(message.id)
                            .onAppear { if message.id == newest { atBottom = true } }
                            .onDisappear { if message.id == newest { atBottom = false } }
                    }
                }
                .padding(.horizontal, 8)
                .padding(.vertical, 4)
            }
            .defaultScrollAnchor(.bottom)
            .scrollDismissesKeyboard(.interactively)
            .onChange(of: newest) { _, newest in
                guard atBottom, let newest else { return }
                withAnimation { proxy.scrollTo(newest, anchor: .bottom) }
            }
        }
    }
}

private struct MessageBubble: View {
    let message: Message
    let inGroup: Bool

    var body: some View {
        let outgoing = message.direction == .outgoing
        HStack {
            if outgoing { Spacer(minLength: 48) }
            VStack(alignment: .leading, spacing: 4) {
                if inGroup && !outgoing {
                    Text(message.senderNick ?? message.sender)
                        .font(.caption.bold())
                        .foregroundStyle(.tint)
                }
                if message.privateWith != nil {
                    Text("Private message").font(.caption2).foregroundStyle(.purple)
                }
                if let reply = message.replyTo {
                    Text("\(reply.sender): \(reply.excerpt)")
                        .font(.caption)
                        .foregroundStyle(.secondary)
                        .lineLimit(2)
                }
                MessageBody(message: message)
                if !message.reactions.isEmpty {
                    Text(message.reactions.map { "\($0.emoji) \($0.count)" }.joined(separator: "  "))
                        .font(.caption)
                }
                MessageFooter(message: message, outgoing: outgoing)
                    .frame(maxWidth: .infinity, alignment: .trailing)
                if let failure = message.error ?? (message.state == .failed ? "Not sent" : nil) {
                    Text(failure).font(.caption).foregroundStyle(.red)
                }
            }
            .fixedSize(horizontal: false, vertical: true)
            .padding(.horizontal, 12)
            .padding(.vertical, 8)
            .background(
                outgoing ? Color.accentColor.opacity(0.2) : Color(uiColor: .secondarySystemBackground),
                in: RoundedRectangle(cornerRadius: 16))
            if !outgoing { Spacer(minLength: 48) }
        }
    }
}

private struct MessageBody: View {
    let message: Message

    var body: some View {
        if message.retracted {
            Text("This message was deleted").italic().foregroundStyle(.secondary)
        } else if let file = message.file {
            // With a file, the body is its address: the name says more.
            Text("📎 \(file.name)")
            if let transfer = transferText(file) {
                Text(transfer).font(.caption)
            }
        } else {
            Text(styledBody(message.body, message.spans))
                .textSelection(.enabled)
        }
    }
}

/// The body with the core's styles. Nested spans add up.
private func styledBody(_ body: String, _ spans: [StyleSpan]) -> AttributedString {
    var text = AttributedString(body)
    for (style, range) in styleRanges(body, spans) {
        guard
            let lower = AttributedString.Index(range.lowerBound, within: text),
            let upper = AttributedString.Index(range.upperBound, within: text)
        else { continue }
        let intent: InlinePresentationIntent
        switch style {
        case .strong: intent = .stronglyEmphasized
        case .emphasis: intent = .emphasized
        case .strike: intent = .strikethrough
        case .code, .codeBlock: intent = .code
        case .quote:
            text[lower..<upper].foregroundColor = .secondary
            continue
        }
        let runs = text[lower..<upper].runs.map { ($0.range, $0.inlinePresentationIntent ?? []) }
        for (run, existing) in runs {
            text[run].inlinePresentationIntent = existing.union(intent)
        }
    }
    return text
}

private struct MessageFooter: View {
    let message: Message
    let outgoing: Bool

    var body: some View {
        // The minute is enough here; the list is not redrawn to age it.
        TimelineView(.everyMinute) { context in
            HStack(spacing: 4) {
                if message.edited {
                    Text("edited")
                }
                Text(formatTime(message.timestampMs, nowMs: milliseconds(context.date)))
                if message.encryption != .plain {
                    Image(systemName: "lock.fill").accessibilityLabel("Encrypted")
                }
                switch message.trust {
                case .undecided:
                    Image(systemName: "exclamationmark.shield")
                        .foregroundStyle(.red)
                        .accessibilityLabel("From a device not trusted yet")
                case .distrusted:
                    Image(systemName: "xmark.shield")
                        .foregroundStyle(.red)
                        .accessibilityLabel("From a distrusted device")
                default:
                    EmptyView()
                }
                if outgoing {
                    deliveryIcon
                        .accessibilityLabel(deliveryText(message.state))
                }
            }
            .font(.caption2)
            .foregroundStyle(.secondary)
        }
    }

    @ViewBuilder
    private var deliveryIcon: some View {
        switch message.state {
        case .pending: Image(systemName: "clock")
        case .sent: Image(systemName: "checkmark")
        case .delivered: Image(systemName: "checkmark.circle")
        case .read: Image(systemName: "checkmark.circle.fill").foregroundStyle(.tint)
        case .failed: Image(systemName: "exclamationmark.circle").foregroundStyle(.red)
        }
    }
}

private struct Composer: View {
    @Binding var draft: String
    let canSend: Bool
    let onSend: () -> Void

    var body: some View {
        HStack(alignment: .bottom, spacing: 8) {
            TextField("Message", text: $draft, axis: .vertical)
                .lineLimit(1...6)
                .textFieldStyle(.roundedBorder)
                .textInputAutocapitalization(.sentences)
            Button(action: onSend) {
                Image(systemName: "arrow.up.circle.fill").font(.title)
            }
            .disabled(!canSend)
            .accessibilityLabel("Send")
        }
        .padding(8)
        .background(.bar)
    }
}
