import LinnetKit
import SwiftUI

/// Creating an account on a server of the user's choice (a user name and a password, no
/// phone number), or logging in to one they have.
struct OnboardingView: View {
    @State private var model: OnboardingModel
    private let onDone: () -> Void

    init(linnet: Linnet, onDone: @escaping () -> Void) {
        _model = State(initialValue: OnboardingModel(linnet: linnet))
        self.onDone = onDone
    }

    var body: some View {
        @Bindable var model = model
        Form {
            Picker("", selection: $model.mode) {
                Text("New account").tag(OnboardingModel.Mode.register)
                Text("I have an account").tag(OnboardingModel.Mode.logIn)
            }
            .pickerStyle(.segmented)
            .listRowBackground(Color.clear)

            switch model.mode {
            case .register:
                Section {
                    TextField("User name", text: $model.username)
                        .textContentType(.username)
                    TextField("Server, e.g. example.org", text: $model.domain)
                        .keyboardType(.URL)
                } header: {
                    Text("Pick any XMPP server that lets people sign up, and a user name on it. No phone number and no e-mail address are needed.")
                        .textCase(nil)
                } footer: {
                    if let address = model.newAddress {
                        Text("Your address will be \(address)")
                    }
                }
            case .logIn:
                Section {
                    TextField("you@example.org", text: $model.jid)
                        .keyboardType(.emailAddress)
                        .textContentType(.username)
                } header: {
                    Text("Address")
                }
            }

            Section {
                SecureField("Password", text: $model.password)
                    .textContentType(model.mode == .register ? .newPassword : .password)
                if model.mode == .register {
                    SecureField("Password again", text: $model.passwordAgain)
                        .textContentType(.newPassword)
                }
            } footer: {
                if model.passwordsDiffer {
                    Text("The passwords differ").foregroundStyle(.red)
                }
            }

            if model.error != nil {
                ErrorBanner(error: $model.error)
                    .listRowInsets(EdgeInsets())
                    .listRowBackground(Color.clear)
            }

            Section {
                Button(action: model.submit) {
                    HStack {
                        Spacer()
                        if model.busy {
                            ProgressView()
                        } else {
                            Text(model.mode == .register ? "Create account" : "Log in").bold()
                        }
                        Spacer()
                    }
                }
                .disabled(!model.canSubmit)
            }
        }
        .textInputAutocapitalization(.never)
        .autocorrectionDisabled()
        .navigationTitle("Welcome to Linnet")
        .onChange(of: model.done) { _, done in
            if done { onDone() }
        }
    }
}
