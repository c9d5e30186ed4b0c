import LinnetKit
import SwiftUI

/// Each account's own fingerprint and verification link, a contact's devices with their
/// fingerprints and trust, and verifying a contact by the link they show.
struct SettingsView: View {
    @Environment(AppModel.self) private var app
    @State private var model: SettingsModel

    init(linnet: Linnet, account: Int64?, peer: String?) {
        _model = State(initialValue: SettingsModel(linnet: linnet, account: account, peer: peer))
    }

    var body: some View {
        @Bindable var model = model
        Form {
            if model.error != nil {
                ErrorBanner(error: $model.error)
                    .listRowInsets(EdgeInsets())
                    .listRowBackground(Color.clear)
            }

            ForEach(model.accounts) { account in
                OwnAccountSection(
                    account: account,
                    connection: app.chatList?.accounts.first { $0.id == account.id }?.connection)
            }

            Section {
                if model.accounts.count > 1 {
                    AccountPicker(
                        accounts: model.accounts.map { ($0.id, $0.jid) }, selection: $model.account)
                }
                HStack {
                    TextField("Address", text: $model.peer)
                        .keyboardType(.emailAddress)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                        .onSubmit { model.lookUp() }
                    Button("Show") { model.lookUp() }
                        .disabled(!model.canLookUp)
                }
                if !model.contacts.isEmpty {
                    Menu("Choose a contact") {
                        ForEach(model.contacts, id: \.jid) { contact in
                            Button(contact.name ?? contact.jid) { model.lookUp(contact.jid) }
                        }
                    }
                }
            } header: {
                Text("A contact's devices")
            }

            if let devices = model.devices {
                Section(model.devicesOf ?? "") {
                    if devices.isEmpty {
                        Text("No devices known.").foregroundStyle(.secondary)
                    }
                    ForEach(devices, id: \.self) { DeviceRow(device: $0) }
                }
            }

            Section {
                TextField("xmpp: link", text: $model.verificationUri)
                    .keyboardType(.URL)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
                Button("Verify", action: model.verify)
                    .disabled(!model.canVerify)
                if let notice = model.notice {
                    Text(notice)
                }
            } header: {
                Text("Verify a contact")
            } footer: {
                Text("Paste the verification link your contact shows in their settings.")
            }
        }
        .navigationTitle("Settings")
        .onAppear(perform: model.load)
    }
}

private struct OwnAccountSection: View {
    let account: AccountSecurity
    let connection: Connection?

    var body: some View {
        Section {
            if let connection {
                TimelineView(.periodic(from: .now, by: isCountingDown(connection) ? 1 : 60)) { context in
                    HStack(spacing: 8) {
                        ConnectionDot(connection: connection)
                        Text(connectionText(connection, nowMs: milliseconds(context.date)))
                    }
                }
            }
            VStack(alignment: .leading, spacing: 4) {
                Text("This device's fingerprint").font(.subheadline.bold())
                Text(account.fingerprint.map(formatFingerprint) ?? "Not made yet: log in once first.")
                    .font(.footnote.monospaced())
                    .textSelection(.enabled)
            }
            if let uri = account.verificationUri {
                VStack(alignment: .leading, spacing: 4) {
                    Text("Verification link").font(.subheadline.bold())
                    Text(uri).font(.footnote).textSelection(.enabled)
                    Text("A contact who opens this link verifies your devices.")
                        .font(.caption)
                        .foregroundStyle(.secondary)
                }
                ShareLink("Share the verification link", item: uri)
            }
        } header: {
            Text(account.jid).textCase(nil)
        }
    }
}

private struct DeviceRow: View {
    let device: Device

    var body: some View {
        let tags = [
            encryptionText(device.encryption),
            trustText(device.trust),
            device.active ? nil : "inactive",
            device.stale ? "stale" : nil,
        ].compactMap { $0 }
        VStack(alignment: .leading, spacing: 4) {
            Text(tags.joined(separator: " · ")).font(.caption).foregroundStyle(.secondary)
            Text((device.label ?? "Device \(device.deviceId)") + (device.current ? " (this device)" : ""))
                .font(.headline)
            Text(device.fingerprint.map(formatFingerprint) ?? "No key published")
                .font(.footnote.monospaced())
                .textSelection(.enabled)
        }
    }
}
