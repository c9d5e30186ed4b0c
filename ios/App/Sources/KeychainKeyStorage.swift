import Foundation
import LinnetKit
import Security

/// Keeps the database key (64 hex digits) in the Keychain as a generic password, readable
/// after the first unlock since boot (so that a push can wake the app behind a locked
/// screen), never synchronised to iCloud and never restored to another device: a backup
/// restored elsewhere has the database but not its key, and starts afresh.
///
/// LinnetKit's `Linnet` takes a `DatabaseKeyStore` and bridges it to the core's
/// `KeyStorage`, so this implements the former.
final class KeychainKeyStorage: DatabaseKeyStore {
    private let service: String
    private let account = "database-key"

    init(service: String = Bundle.main.bundleIdentifier ?? "im.linnet.app") {
        self.service = service
    }

    private var query: [CFString: Any] {
        [
            kSecClass: kSecClassGenericPassword,
            kSecAttrService: service,
            kSecAttrAccount: account,
            kSecAttrSynchronizable: false,
        ]
    }

    func load() throws -> String? {
        var search = query
        search[kSecReturnData] = true
        search[kSecMatchLimit] = kSecMatchLimitOne
        var result: CFTypeRef?
        let status = SecItemCopyMatching(search as CFDictionary, &result)
        switch status {
        case errSecSuccess:
            guard let data = result as? Data, let key = String(data: data, encoding: .ascii) else {
                throw LinnetError.Internal(detail: "the Keychain's database key is not text")
            }
            return key
        case errSecItemNotFound:
            return nil
        default:
            // Above all before the first unlock (errSecInteractionNotAllowed): answering nil
            // would make the core create a new key and lose the database.
            throw keychainError("reading", status)
        }
    }

    func save(_ keyHex: String) throws {
        let data = Data(keyHex.utf8)
        var item = query
        item[kSecValueData] = data
        item[kSecAttrAccessible] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
        var status = SecItemAdd(item as CFDictionary, nil)
        if status == errSecDuplicateItem {
            // Re-keying replaces the key.
            let update: [CFString: Any] = [
                kSecValueData: data,
                kSecAttrAccessible: kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
            ]
            status = SecItemUpdate(query as CFDictionary, update as CFDictionary)
        }
        guard status == errSecSuccess else { throw keychainError("saving", status) }
    }

    /// The core only knows its own error type; anything else would reach it as a panic-like
    /// "unexpected error". The status is a number, never the key.
    private func keychainError(_ doing: String, _ status: OSStatus) -> LinnetError {
        let message = SecCopyErrorMessageString(status, nil) as String? ?? "no description"
        return .Internal(detail: "Keychain: \(doing) the database key failed: \(status) (\(message))")
    }
}
