// scripts/bench-ffi: what it costs to bring a 1,000-conversation chat list from the core to
// Swift through the FFI (lowering in Rust, lifting in Swift). Figures, not a test.
import Dispatch
import Foundation
import LinnetKit

final class Keys: DatabaseKeyStore, @unchecked Sendable {
    var key: String?
    func load() throws -> String? { key }
    func save(_ keyHex: String) throws { key = keyHex }
}

func median(_ xs: [UInt64]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1
        ? Double(s[s.count / 2]) : Double(s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

let args = CommandLine.arguments
let conversations = args.count > 1 ? Int(args[1])! : 1000
let runs = args.count > 2 ? Int(args[2])! : 50
let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
let c = try Linnet(dataDir: dir.path, keys: Keys())
// Offline: each message waits in the outbox, and its conversation is in the list.
let acc = try c.addAccount(jid: "bench@bench.invalid", password: "pass word")
for i in 0..<conversations {
    try c.sendMessage(account: acc, to: "peer\(i)@bench.invalid", body: "message \(i)")
}
while c.currentChatList().conversations.count < conversations { usleep(10_000) }
for _ in 0..<10 { _ = c.currentChatList() }
var call: [UInt64] = []
for _ in 0..<runs {
    let t = DispatchTime.now().uptimeNanoseconds
    let s = c.currentChatList()
    precondition(s.conversations.count == conversations)
    call.append(DispatchTime.now().uptimeNanoseconds - t)
}
print(String(
    format: "chat list of %d conversations to Swift: call %.2f ms (median of %d)",
    conversations, median(call) / 1e6, runs))
