import LinnetKit
import SwiftUI

/// The chat list: each account's connection, contact requests, then the conversations, most
/// recent first as the core orders them.
struct ChatListView: View {
    @Environment(AppModel.self) private var model

    var body: some View {
        @Bindable var model = model
        let accounts = model.chatList?.accounts ?? []
        // Every second only while a retry is being counted down.
        TimelineView(.periodic(from: .now, by: isCountingDown(accounts) ? 1 : 60)) { context in
            let nowMs = milliseconds(context.date)
            List {
                if model.error != nil {
                    ErrorBanner(error: $model.error)
                }
                Section {
                    ForEach(accounts, id: \.id) { account in
                        AccountStatusRow(account: account, nowMs: nowMs)
                    }
                }
                requests(accounts)
                conversations(nowMs: nowMs)
            }
            .listStyle(.plain)
        }
        .navigationTitle("Chats")
        .toolbar {
            ToolbarItem(placement: .topBarLeading) {
                NavigationLink(value: Route.settings(account: nil, peer: nil)) {
                    Image(systemName: "gearshape")
                }
                .accessibilityLabel("Settings")
            }
            ToolbarItemGroup(placement: .topBarTrailing) {
                NavigationLink(value: Route.addAccount) {
                    Image(systemName: "person.crop.circle.badge.plus")
                }
                .accessibilityLabel("Add an account")
                if !accounts.isEmpty {
                    NavigationLink(value: Route.addContact) {
                        Image(systemName: "square.and.pencil")
                    }
                    .accessibilityLabel("Add a contact")
                }
            }
        }
    }

    @ViewBuilder
    private func requests(_ accounts: [Account]) -> some View {
        let pending = accounts.flatMap { account in
            account.subscriptionRequests.map { (key: "\(account.id) \($0)", account: account, jid: $0) }
        }
        if !pending.isEmpty {
            Section("Contact requests") {
                ForEach(pending, id: \.key) { request in
                    SubscriptionRequestRow(
                        jid: request.jid,
                        toAccount: accounts.count > 1 ? request.account.jid : nil,
                        onApprove: { model.approve(account: request.account.id, jid: request.jid) },
                        onDeny: { model.deny(account: request.account.id, jid: request.jid) })
                }
            }
        }
    }

    @ViewBuilder
    private func conversations(nowMs: Int64) -> some View {
        if let chatList = model.chatList {
            if chatList.conversations.isEmpty {
                Text("No conversations yet. Add a contact with the \(Image(systemName: "square.and.pencil")) button.")
                    .font(.callout)
                    .foregroundStyle(.secondary)
                    .multilineTextAlignment(.center)
                    .frame(maxWidth: .infinity)
                    .padding(32)
                    .listRowSeparator(.hidden)
            } else {
                ForEach(chatList.conversations, id: \.id) { chat in
                    NavigationLink(value: Route.conversation(chat.id)) {
                        ChatRow(chat: chat, nowMs: nowMs)
                    }
                }
            }
        }
    }
}

private struct AccountStatusRow: View {
    let account: Account
    let nowMs: Int64

    var body: some View {
        HStack(spacing: 8) {
            ConnectionDot(connection: account.connection)
            Text(
                "\(account.jid): \(connectionText(account.connection, nowMs: nowMs))"
                    + (account.catchingUp ? ", catching up" : "")
            )
            .font(.caption)
            .lineLimit(1)
            .truncationMode(.middle)
        }
    }
}

/// Someone asking to see our presence (and so to become a contact): approve or deny.
struct SubscriptionRequestRow: View {
    let jid: String
    let toAccount: String?
    let onApprove: () -> Void
    let onDeny: () -> Void

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            Text("\(jid) would like to add you as a contact")
                .font(.callout)
            if let toAccount {
                Text("to \(toAccount)").font(.caption).foregroundStyle(.secondary)
            }
            HStack {
                Spacer()
                // Borderless, so that each button takes its own taps rather than the row's.
                Button("Deny", role: .destructive, action: onDeny)
                    .buttonStyle(.borderless)
                Button("Approve", action: onApprove)
                    .buttonStyle(.borderedProminent)
            }
        }
        .padding(.vertical, 4)
    }
}

private struct ChatRow: View {
    let chat: ChatItem
    let nowMs: Int64

    var body: some View {
        let title = chat.name ?? chat.peer
        let at = chat.lastMessage?.timestampMs ?? chat.lastActivityMs
        HStack(spacing: 12) {
            AvatarView(name: title, group: chat.group)
            VStack(alignment: .leading, spacing: 2) {
                Text(title).font(.headline).lineLimit(1)
                if let last = chat.lastMessage {
                    Text(previewText(last))
                        .font(.subheadline)
                        .foregroundStyle(.secondary)
                        .lineLimit(1)
                }
            }
            Spacer(minLength: 8)
            VStack(alignment: .trailing, spacing: 4) {
                if at > 0 {
                    Text(formatTime(at, nowMs: nowMs)).font(.caption2).foregroundStyle(.secondary)
                }
                if chat.unread > 0 {
                    Text("\(chat.unread)")
                        .font(.caption2.bold())
                        .foregroundStyle(.white)
                        .padding(.horizontal, 6)
                        .padding(.vertical, 2)
                        .background(.tint, in: Capsule())
                        .accessibilityLabel("\(chat.unread) unread")
                }
            }
        }
    }
}
