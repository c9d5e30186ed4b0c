import LinnetKit
import SwiftUI

/// A failure the user should read, until they dismiss it. Nothing when `error` is nil.
struct ErrorBanner: View {
    @Binding var error: String?

    var body: some View {
        if let error {
            HStack(alignment: .top) {
                Image(systemName: "exclamationmark.triangle.fill")
                    .foregroundStyle(.red)
                    .accessibilityHidden(true)
                Text(error)
                    .font(.callout)
                    .frame(maxWidth: .infinity, alignment: .leading)
                Button {
                    self.error = nil
                } label: {
                    Image(systemName: "xmark")
                }
                .buttonStyle(.borderless)
                .accessibilityLabel("Dismiss")
            }
            .padding(12)
            .background(.red.opacity(0.12), in: RoundedRectangle(cornerRadius: 12))
        }
    }
}

/// A round placeholder with the first letter of `name` (pictures are not shown yet).
struct AvatarView: View {
    let name: String
    var group = false

    var body: some View {
        ZStack {
            Circle().fill(Color.accentColor.opacity(0.2))
            if group {
                Image(systemName: "person.3.fill")
                    .font(.footnote)
            } else {
                Text(name.first.map { String($0).uppercased() } ?? "?")
                    .font(.headline)
            }
        }
        .frame(width: 40, height: 40)
        .accessibilityHidden(true)
    }
}

/// While the client opens, or why it could not.
struct StartupView: View {
    let error: String?

    var body: some View {
        VStack(spacing: 12) {
            if let error {
                Text("Linnet could not start").font(.title2)
                Text(error).multilineTextAlignment(.center)
            } else {
                ProgressView()
            }
        }
        .padding(32)
    }
}

/// A dot in the colour of an account's connection.
struct ConnectionDot: View {
    let connection: Connection

    var body: some View {
        Circle()
            .fill(color)
            .frame(width: 8, height: 8)
            .accessibilityHidden(true)
    }

    private var color: Color {
        switch connection {
        case .online: .green
        case .connecting, .waiting: .orange
        case .offline(let reason): reason == nil ? .gray : .red
        }
    }
}

/// One choice per account, for screens that act for one of several.
struct AccountPicker: View {
    let accounts: [(id: Int64, jid: String)]
    @Binding var selection: Int64?

    var body: some View {
        Picker("Account", selection: $selection) {
            ForEach(accounts, id: \.id) { account in
                Text(account.jid).tag(Optional(account.id))
            }
        }
    }
}
