import LinnetKit
import SwiftUI

/// Where the navigation stack can go from the chat list.
enum Route: Hashable {
    case conversation(Int64)
    case addContact
    case addAccount
    /// For `account` (the first when nil), showing `peer`'s devices at once when given.
    case settings(account: Int64?, peer: String?)
}

/// Startup, then onboarding until an account exists, then the chat list and what it opens.
struct RootView: View {
    @Environment(AppModel.self) private var model

    var body: some View {
        switch model.phase {
        case .opening:
            StartupView(error: nil)
        case .failed(let message):
            StartupView(error: message)
        case .ready(let linnet):
            if model.hasAccounts {
                MainStack(linnet: linnet)
            } else {
                NavigationStack {
                    OnboardingView(linnet: linnet) { model.accountAdded() }
                }
            }
        }
    }
}

private struct MainStack: View {
    let linnet: Linnet
    @State private var path: [Route] = []

    var body: some View {
        NavigationStack(path: $path) {
            ChatListView()
                .navigationDestination(for: Route.self) { route in
                    destination(route)
                }
        }
    }

    @ViewBuilder
    private func destination(_ route: Route) -> some View {
        switch route {
        case .conversation(let id):
            ConversationView(linnet: linnet, id: id) { account, peer in
                path.append(.settings(account: account, peer: peer))
            }
        case .addContact:
            // The new conversation replaces this screen: back goes to the chat list.
            AddContactView(linnet: linnet) { id in path = [.conversation(id)] }
        case .addAccount:
            OnboardingView(linnet: linnet) { path.removeLast() }
        case .settings(let account, let peer):
            SettingsView(linnet: linnet, account: account, peer: peer)
        }
    }
}
