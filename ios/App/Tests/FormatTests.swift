// What the screens show, from the core's records. These functions are platform independent,
// so they are also run on Linux (see ../../README.md).
import XCTest

@testable import LinnetiOS
import LinnetKit

final class FormatTests: XCTestCase {
    func testFingerprintIsTwoLinesOfFourGroups() {
        let hex = String(repeating: "0123456789abcdef", count: 4)
        XCTAssertEqual(
            formatFingerprint(hex),
            "01234567 89abcdef 01234567 89abcdef\n01234567 89abcdef 01234567 89abcdef")
    }

    func testWaitingCountsDownInSecondsThenMinutes() {
        let waiting = Connection.waiting(retryAtMs: 10_000, reason: "no route")
        XCTAssertEqual(connectionText(waiting, nowMs: 10_000), "Waiting (no route), retrying now")
        XCTAssertEqual(connectionText(waiting, nowMs: 5_500), "Waiting (no route), retrying in 5 s")
        XCTAssertEqual(
            connectionText(.waiting(retryAtMs: 200_000, reason: "x"), nowMs: 0),
            "Waiting (x), retrying in 4 min")
        XCTAssertTrue(isCountingDown(waiting))
        XCTAssertFalse(isCountingDown(.online))
        XCTAssertEqual(connectionText(.offline(reason: nil), nowMs: 0), "Offline")
    }

    func testStyleSpansCountUtf16() {
        // "😀" is two UTF-16 units: the span [3, 9) is "*bold*", not " *bold".
        let body = "😀 *bold*"
        let spans = [StyleSpan(style: .strong, start: 3, end: 9, depth: 0)]
        let ranges = styleRanges(body, spans)
        XCTAssertEqual(ranges.count, 1)
        XCTAssertEqual(ranges.first.map { String(body[$0.1]) }, "*bold*")
    }

    func testStyleSpansOutOfRangeAreClampedOrDropped() {
        let body = "hi"
        let spans = [
            StyleSpan(style: .emphasis, start: 1, end: 99, depth: 0),
            StyleSpan(style: .code, start: 50, end: 60, depth: 0),
        ]
        let ranges = styleRanges(body, spans)
        XCTAssertEqual(ranges.map { String(body[$0.1]) }, ["i"])
    }

    func testOnlyRefusalsAndBadInputCarryTheCoresDetail() {
        XCTAssertEqual(
            humanMessage(LinnetError.Policy(detail: "username taken")), "The server refused: username taken")
        XCTAssertFalse(humanMessage(LinnetError.Network(detail: "secret.example:5222")).contains("secret"))
        XCTAssertFalse(humanMessage(LinnetError.Internal(detail: "sqlite")).contains("sqlite"))
    }

    func testOutgoingPreviewSaysYou() {
        let preview = Preview(id: 1, body: "hello", file: nil, direction: .outgoing, state: .sent, timestampMs: 0)
        XCTAssertEqual(previewText(preview), "You: hello")
    }
}
