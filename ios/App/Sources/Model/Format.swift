import Foundation
import LinnetKit

/// An account's connection in a few words; `nowMs` counts down to the next retry.
func connectionText(_ connection: Connection, nowMs: Int64) -> String {
    switch connection {
    case .online:
        return "Online"
    case .connecting:
        return "Connecting…"
    case .waiting(let retryAtMs, let reason):
        let seconds = (retryAtMs - nowMs + 999) / 1000
        let retry =
            if seconds <= 0 { "retrying now" }
            else if seconds < 60 { "retrying in \(seconds) s" }
            else { "retrying in \((seconds + 59) / 60) min" }
        return "Waiting (\(reason)), \(retry)"
    case .offline(let reason):
        return reason.map { "Offline: \($0)" } ?? "Offline"
    }
}

/// True while a retry is being counted down, when the clock on screen must tick every second.
func isCountingDown(_ connection: Connection) -> Bool {
    if case .waiting = connection { true } else { false }
}

func isCountingDown(_ accounts: [Account]) -> Bool {
    accounts.contains { isCountingDown($0.connection) }
}

func milliseconds(_ date: Date) -> Int64 {
    Int64((date.timeIntervalSince1970 * 1000).rounded())
}

/// The time of day for today, the day for this year, the date before.
func formatTime(
    _ timestampMs: Int64, nowMs: Int64, calendar: Calendar = .current, locale: Locale = .current
) -> String {
    let at = Date(timeIntervalSince1970: Double(timestampMs) / 1000)
    let now = Date(timeIntervalSince1970: Double(nowMs) / 1000)
    var style = Date.FormatStyle(locale: locale, calendar: calendar, timeZone: calendar.timeZone)
    if calendar.isDate(at, inSameDayAs: now) {
        style = style.hour().minute()
    } else if calendar.component(.year, from: at) == calendar.component(.year, from: now) {
        style = style.day().month(.abbreviated)
    } else {
        style = style.day().month(.abbreviated).year()
    }
    return at.formatted(style)
}

/// A chat's last message in one line.
func previewText(_ preview: Preview) -> String {
    let text = preview.file.map { "📎 \($0)" } ?? preview.body
    return preview.direction == .outgoing ? "You: \(text)" : text
}

/// 64 hex digits as two lines of four groups of eight, the way people compare them.
func formatFingerprint(_ hex: String) -> String {
    let groups = stride(from: 0, to: hex.count, by: 8).map { start -> String in
        let from = hex.index(hex.startIndex, offsetBy: start)
        let to = hex.index(from, offsetBy: 8, limitedBy: hex.endIndex) ?? hex.endIndex
        return String(hex[from..<to])
    }
    return stride(from: 0, to: groups.count, by: 4)
        .map { groups[$0..<min($0 + 4, groups.count)].joined(separator: " ") }
        .joined(separator: "\n")
}

func trustText(_ trust: DeviceTrust?) -> String {
    switch trust {
    case .verified: "Verified"
    case .blind: "Trusted, not verified"
    case .undecided: "Not trusted yet"
    case .distrusted: "Distrusted"
    case nil: "Trust unknown"
    }
}

func encryptionText(_ encryption: Encryption) -> String {
    switch encryption {
    case .plain: "Not encrypted"
    case .omemo03: "OMEMO 0.3"
    case .omemo2: "OMEMO 2"
    }
}

func deliveryText(_ state: DeliveryState) -> String {
    switch state {
    case .pending: "Sending"
    case .sent: "Sent"
    case .delivered: "Delivered"
    case .read: "Read"
    case .failed: "Not sent"
    }
}

/// Where an attachment's transfer stands, or nil once there is nothing to say.
func transferText(_ file: FileInfo) -> String? {
    let percent = file.size.flatMap { $0 > 0 ? " \(file.transferred * 100 / $0)%" : nil } ?? ""
    switch file.state {
    case .uploading: return "Uploading\(percent)"
    case .waiting: return "Waiting to upload"
    case .downloading: return "Downloading\(percent)"
    case .failed: return file.error.map { "Transfer failed: \($0)" } ?? "Transfer failed"
    case .cancelled: return "Cancelled"
    case .uploaded, .available, .downloaded: return nil
    }
}

/// The core's styling spans as ranges of `body`. The core counts UTF-16 code units (as
/// Kotlin and NSString do); Swift counts characters, so the offsets are converted here and
/// clamped, since a span from the network may point anywhere.
func styleRanges(_ body: String, _ spans: [StyleSpan]) -> [(TextStyle, Range<String.Index>)] {
    let utf16 = body.utf16
    return spans.compactMap { span in
        let start = min(Int(span.start), utf16.count)
        let end = max(start, min(Int(span.end), utf16.count))
        guard
            let from = utf16.index(utf16.startIndex, offsetBy: start, limitedBy: utf16.endIndex)?
                .samePosition(in: body),
            let to = utf16.index(utf16.startIndex, offsetBy: end, limitedBy: utf16.endIndex)?
                .samePosition(in: body),
            from < to
        else { return nil }
        return (span.style, from..<to)
    }
}

extension String {
    var isBlank: Bool { allSatisfy(\.isWhitespace) }
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
