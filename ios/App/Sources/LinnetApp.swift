import LinnetKit
import SwiftUI

@main
struct LinnetApp: App {
    @State private var model: AppModel
    @Environment(\.scenePhase) private var scenePhase
    private let network = NetworkMonitor()

    init() {
        let model = AppModel()
        _model = State(initialValue: model)
        network.start { online in model.networkChanged(online: online) }
    }

    var body: some Scene {
        WindowGroup {
            RootView()
                .environment(model)
                .task {
                    await model.run(dataDir: Self.dataDirectory, keys: KeychainKeyStorage())
                }
        }
        .onChange(of: scenePhase, initial: true) { _, phase in
            // Inactive (the app switcher, a call banner) is still on screen: only the
            // background counts as away, which is when the core tells the server (CSI).
            model.setForeground(phase != .background)
        }
    }

    /// Application Support/linnet, kept out of backups: its key never leaves this device
    /// (the Keychain item is ThisDeviceOnly), so a restored copy elsewhere could not be
    /// opened, and an OMEMO device must not be cloned anyway.
    nonisolated private static func dataDirectory() throws -> URL {
        var dir = try FileManager.default.url(
            for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true
        ).appendingPathComponent("linnet", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var values = URLResourceValues()
        values.isExcludedFromBackup = true
        try dir.setResourceValues(values)
        return dir
    }
}
