import Foundation
import Network

/// Tells the app when the network comes, goes or changes path, so that the core reconnects
/// at once instead of waiting out its backoff.
final class NetworkMonitor {
    private let monitor = NWPathMonitor()
    private let queue = DispatchQueue(label: "im.linnet.app.network")

    func start(_ onChange: @escaping @MainActor @Sendable (_ online: Bool) -> Void) {
        monitor.pathUpdateHandler = { path in
            let online = path.status == .satisfied
            Task { @MainActor in onChange(online) }
        }
        monitor.start(queue: queue)
    }

    deinit {
        monitor.cancel()
    }
}
