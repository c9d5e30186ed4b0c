import LinnetKit
import SwiftUI

/// Adding a contact to one of the accounts, and answering those who asked to add us.
struct AddContactView: View {
    @Environment(AppModel.self) private var app
    @State private var model: AddContactModel
    private let onAdded: (_ conversation: Int64) -> Void

    init(linnet: Linnet, onAdded: @escaping (_ conversation: Int64) -> Void) {
        _model = State(initialValue: AddContactModel(linnet: linnet))
        self.onAdded = onAdded
    }

    var body: some View {
        @Bindable var model = model
        Form {
            Section {
                if model.accounts.count > 1 {
                    AccountPicker(
                        accounts: model.accounts.map { ($0.id, $0.jid) }, selection: $model.account)
                }
                TextField("friend@example.org", text: $model.jid)
                    .keyboardType(.emailAddress)
                    .textContentType(.username)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
                TextField("Name (optional)", text: $model.name)
            } footer: {
                Text("They will be asked to let you see when they are online.")
            }

            if model.error != nil {
                ErrorBanner(error: $model.error)
                    .listRowInsets(EdgeInsets())
                    .listRowBackground(Color.clear)
            }

            Section {
                Button(action: model.add) {
                    HStack {
                        Spacer()
                        if model.busy { ProgressView() } else { Text("Add").bold() }
                        Spacer()
                    }
                }
                .disabled(!model.canAdd)
            }

            requests
        }
        .navigationTitle("Add a contact")
        .onAppear(perform: model.load)
        .onChange(of: model.conversation) { _, conversation in
            if let conversation { onAdded(conversation) }
        }
    }

    /// The same requests as in the chat list: whoever gets here to add someone may be
    /// looking for them.
    @ViewBuilder
    private var requests: some View {
        let accounts = app.chatList?.accounts ?? []
        let pending = accounts.flatMap { account in
            account.subscriptionRequests.map { (key: "\(account.id) \($0)", account: account, jid: $0) }
        }
        if !pending.isEmpty {
            Section("Asking to add you") {
                ForEach(pending, id: \.key) { request in
                    SubscriptionRequestRow(
                        jid: request.jid,
                        toAccount: accounts.count > 1 ? request.account.jid : nil,
                        onApprove: { app.approve(account: request.account.id, jid: request.jid) },
                        onDeny: { app.deny(account: request.account.id, jid: request.jid) })
                }
            }
        }
    }
}
